"""The profile's machine-wide measurements, kept apart from any model's and reused across them.

What two processes, Ray and a real run cost here does not depend on the model being planned:
gloo's bandwidth and latency, how much a slot slows when its neighbour computes (measured on a
fixed reference model, the built-in tiny Llama), a Ray phase call's round trip and a worker's
update over the same update in-process, and the tiny real runs' process baselines and
controller overheads (``runs.py``). They take most of a first profile's time, so they are
stored once per machine (``…__cpu__machine.json``, with the conditions they were measured
under) and a profile of another model reuses them while those conditions hold (rescaled when
the machine runs uniformly slower or faster). Each part is skipped when the profile's time
box has no room for it; a skipped part takes the built-in defaults and is measured next time.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from placerl.placement.cost.conditions import Conditions, Verdict, compare
from placerl.placement.cost.machine import CPU_DEFAULT
from placerl.placement.cost.profiles import machine_id, store_dir
from placerl.placement.cost.shapes import tiny_default
from placerl.profiling.collectives import measure_collectives
from placerl.profiling.progress import Steps
from placerl.profiling.ray_calls import measure_ray
from placerl.profiling.runs import (
    local_run,
    ray_run,
    run_peaks,
    runs_line,
    tiny_model,
    tiny_state_bytes,
)

# (name, what the bar shows, estimated seconds on a quiet 2-core x86 VM)
# in the order they are measured: what separates worker plans from the local one first (a
# Ray call, a worker's update and step), then gloo, then the process baseline (memory only;
# the defaults' 480 MiB is what it measured here)
PARTS = (
    ("ray", "Ray: a phase call, a worker's update, a tiny run on two workers", 19.0),
    ("collectives", "gloo collectives and shared cores (two processes)", 7.5),
    ("runs", "a tiny local run in a fresh process (the process baseline)", 6.0),
)


def machine_path(device: str = "cpu") -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in machine_id())[:60]
    return store_dir() / f"{safe}__{device}__machine.json"


@dataclass
class MachinePart:
    """The machine-wide measurements (``None``: not measured) and where they came from."""

    collectives: dict[str, float] | None = None
    ray: dict[str, float] | None = None
    runs: dict[str, Any] | None = None
    conditions: dict[str, Any] | None = None
    note: str = "measured now"

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": {"machine": machine_id(), "device": "cpu", "shape": "machine"},
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "conditions": self.conditions,
            "collectives": self.collectives,
            "ray": self.ray,
            "runs": self.runs,
        }

    def fields(self, threads: int) -> dict[str, Any]:
        """The ``Machine`` fields these measurements set (the defaults' where not measured)."""
        d = CPU_DEFAULT
        coll, ray = self.collectives or {}, self.ray or {}
        runs = (self.runs or {}) | {k: v for k, v in ray.items() if k.startswith("worker_")}
        shared = coll["step_alone_s"] / coll["step_shared_s"] if "step_shared_s" in coll else 1.0
        slowed = coll["decode_shared_s"] / coll["decode_alone_s"] if "decode_alone_s" in coll else 1
        return {
            "intra_bw": coll.get("bw", d.intra_bw),
            "inter_bw": coll.get("bw", d.inter_bw),
            "collective_latency": coll.get("latency", d.collective_latency),
            "sync_bw": coll.get("sync_bw", d.sync_bw),
            "sync_latency": coll.get("sync_latency", d.sync_latency),
            "copy_bw": coll.get("copy_bw", d.copy_bw),
            "shared_core_factor": min(1.0, shared) if threads > 1 else 1.0,
            "shared_overhead_factor": max(1.0, slowed) if threads > 1 else 1.0,
            "rpc_latency": ray.get("rpc_latency", d.rpc_latency),
            "worker_update_factor": ray.get("worker_update_factor", d.worker_update_factor),
            "process_bytes": runs.get("process_bytes", d.process_bytes),
            "worker_bytes": runs.get("worker_bytes", d.worker_bytes),
            "step_overhead": runs.get("step_overhead", d.step_overhead),
            "worker_step_overhead": runs.get("worker_step_overhead", d.worker_step_overhead),
        }

    def missing(self) -> list[str]:
        return [name for name, _, _ in PARTS if getattr(self, name) is None]


def rescaled(part: MachinePart, verdict: Verdict) -> MachinePart:
    """The stored times of ``part`` on a machine running ``verdict.speed`` times as fast."""
    if not verdict.rescaled:
        return part
    s = verdict.speed
    coll = dict(part.collectives or {}) or None
    if coll:
        coll["bw"], coll["latency"] = coll["bw"] * s, coll["latency"] / s
        for key in ("sync_bw", "copy_bw"):
            if key in coll:
                coll[key] *= s
        if "sync_latency" in coll:
            coll["sync_latency"] /= s
    ray = dict(part.ray or {}) or None
    if ray:
        ray["rpc_latency"] /= s
    runs = dict(part.runs or {}) or None
    if runs:
        for key in ("step_overhead", "worker_step_overhead"):
            if key in runs:
                runs[key] /= s
    return MachinePart(coll, ray, runs, part.conditions, part.note)


def stored_part(now: Conditions | None) -> MachinePart:
    """The stored machine-wide measurements that still hold under ``now`` (else an empty
    part, with a note saying why)."""
    path = machine_path()
    if not path.is_file():
        return MachinePart(note="none stored")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        return MachinePart(note=f"{path} unreadable ({err})")
    if not raw.get("conditions") or now is None:
        return MachinePart(note="the stored ones record no conditions")
    verdict = compare(Conditions.from_dict(raw["conditions"]), now)
    if not verdict.usable:
        return MachinePart(note=f"the stored ones were refused: {verdict.reason}")
    collectives = raw.get("collectives")
    if collectives is not None and "sync_bw" not in collectives:
        collectives = None  # stored before the weight sync was measured: measured again
    part = MachinePart(
        collectives,
        raw.get("ray"),
        raw.get("runs"),
        raw["conditions"],
        f"reused from {path} ({verdict.reason})",
    )
    return rescaled(part, verdict)


def store_part(part: MachinePart) -> Path:
    path = machine_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(part.to_dict(), indent=2))
    return path


def measure_local(work: Path) -> dict[str, float]:
    """The tiny local run (a fresh interpreter): the process baseline, the controller's work."""
    return local_run(work, tiny_model(work))


def measure_ray_part(work: Path, process_bytes: float) -> dict[str, Any]:
    """One Ray session: a phase call's round trip, a worker's update over the same update
    here, and the tiny run on two workers (in this process: Ray is up already)."""
    if not (work / "base_model").is_dir():
        tiny_model(work)
    state = tiny_state_bytes(work / "base_model")
    return measure_ray(
        tiny_default(), also=lambda: ray_run(work, state, process_bytes, runner=run_peaks)
    )


def measure_part(
    part: MachinePart, steps: Steps, budget_s: float, now: Conditions, log
) -> MachinePart:
    """The parts ``part`` lacks, measured while the time box allows (``steps`` shows them)."""
    threads = now.threads
    with tempfile.TemporaryDirectory(prefix="placerl-runs-") as tmp:
        work = Path(tmp)
        process = lambda: (part.runs or {}).get("process_bytes", CPU_DEFAULT.process_bytes)  # noqa: E731
        measure = {
            "collectives": lambda: measure_collectives(tiny_default() if threads > 1 else None),
            "runs": lambda: measure_local(work),
            "ray": lambda: measure_ray_part(work, process()),
        }
        fresh = False
        for name, label, estimate in PARTS:
            if getattr(part, name) is not None:
                continue
            if steps.elapsed + estimate > budget_s:
                steps.skip(label, estimate, f"the {budget_s:.0f} s time box; defaults stand in")
                continue
            with steps.step(label, estimate):
                setattr(part, name, measure[name]())
            fresh = True
    if fresh:
        log(f"profile: {runs_line({**(part.runs or {}), **(part.ray or {})})}")
        part.conditions = now.to_dict()
        part.note = "measured now" + (f" (missing: {part.missing()})" if part.missing() else "")
        store_part(part)
    return part
