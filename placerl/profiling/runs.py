"""Two tiny real runs, measured for the cost model: what a process holds besides its models,
and what a step's controller does besides its calls.

A real RL run (GRPO, 10 steps, a checkpoint at the end) of a tiny Llama (h = 64, one block,
70k parameters), each in a fresh interpreter: with ``placement.strategy: local``, and with
Flatten on two Ray workers of one thread (how a 2-slot plan runs).

**Memory.** On a CPU a slot's peak resident set is not only its tensors. A process that runs
placerl's training stack (torch, transformers, tokenizers, safetensors, placerl, and for a
worker Ray and a torch.distributed group) holds some 400-500 MB of library code and data
pages, thread pools, allocator arenas, the data and the loggers, whatever the model.
``placement/cost/memory.py`` adds this as the ``process baseline`` of a slot, so it is measured here, not
guessed:

- ``process_bytes``: the local run's peak RSS (``VmHWM``);
- ``worker_bytes``: the first Ray worker's peak RSS (read just before the runtime stops it:
  ``run_peaks``); ``process_bytes`` plus a bare Ray worker's excess over a bare process when
  Ray cannot start here;

each less the tiny model's own state (weights, gradients, Adam). A smaller probe (imports, a
forward, a backward, an optimizer step and a generation) misses ~100 MB a real run holds
(380 vs 483 MiB here), so the probe is the run itself.

**The controller's own work.** ``time/step`` is the wall time between two steps' logs; each
phase's time is the controller's span around its call. What is left (``step_gap``) is the
controller's work outside every call: the next prompts, the metrics, the log and, with
workers, launching the sample (its uniforms, the row split, the object store) and the workers'
spans. On the tiny model the phases are almost empty, so the gap is what a step of any model
pays: ``step_overhead`` (local) and ``worker_step_overhead`` (Ray), the median over the steps
after the first ``WARMUP``. The gap does not include a phase call's round trip, which is the
phase's (``rpc_latency``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=1,
    num_attention_heads=4,
    num_key_value_heads=2,
)
# A bare Ray worker (default_worker.py, nothing imported) minus a bare interpreter, measured
# on a 2-core x86 VM: 78 MB vs 10 MB. Used only when the Ray run below cannot start.
RAY_WORKER_EXCESS = 68 * 2**20
STEPS, WARMUP = 10, 3  # steps of a tiny run; the first ones (allocations, warm-up) not timed


def status_kb(pid: int | str, key: str) -> int:
    """A ``/proc/<pid>/status`` field in kB (VmHWM: peak resident set, VmRSS: current)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


def run_peaks(raw_config: dict[str, Any]) -> dict[str, Any]:
    """Train ``raw_config`` in this process; the peak RSS of every process holding a slot:
    this one under ``local``, else each Ray worker (pids from the runtime, read before it
    stops them). For a fresh interpreter: ``python -m placerl.profiling.runs``."""
    import torch

    import placerl.trainer as trainer
    from placerl.config.schema import RunConfig

    cfg = RunConfig.model_validate(raw_config)
    before = torch.get_num_threads()  # in a profile's process (the Ray run): restored after
    torch.set_num_threads(1)
    workers: list[dict[str, Any]] = []
    if cfg.placement.strategy != "local":
        from placerl.runtime.ray.runtime import RayRuntime

        close = RayRuntime.close

        def read_then_close(self):
            for host, info in zip(self.group.specs, self.group.info, strict=True):
                peak = status_kb(info["pid"], "VmHWM") * 1024
                workers.append({"rank": host.rank, "label": host.label, "peak": peak})
            close(self)

        RayRuntime.close = read_then_close
        try:
            trainer.train(cfg)
        finally:
            RayRuntime.close = close
    else:
        trainer.train(cfg)
    torch.set_num_threads(before)
    controller = status_kb("self", "VmHWM") * 1024
    if not workers:
        workers = [{"rank": 0, "label": "local", "peak": controller}]
    return {"workers": workers, "controller": controller, "step_gaps": step_gaps(cfg.run_dir)}


def step_gaps(run_dir) -> list[float]:
    """Per step after ``WARMUP``: ``time/step`` less the sum of its phases' times (the
    ``controller`` phase as ``strategy: auto`` reads it from a run)."""
    from placerl.logging import read_metrics
    from placerl.placement.auto.replan import observed_phases, phase_times

    out = []
    for m in read_metrics(run_dir):
        if m.get("step", 0) > WARMUP and "time/step" in m:
            seen = observed_phases(phase_times(m), m["time/step"], pipelined=False)
            out.append(seen["controller"])
    return out


def run_fresh(raw_config: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    """``run_peaks`` in a fresh interpreter (nothing of this process counted)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    out = subprocess.run(
        [sys.executable, "-m", "placerl.profiling.runs"],
        input=json.dumps(raw_config),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def tiny_config(work: Path, placement: dict[str, Any]) -> dict[str, Any]:
    """A ``STEPS``-step GRPO run of the tiny model in ``work/base_model``, checkpointed at the
    end."""
    return {
        "stage": "grpo",
        "seed": 0,
        "run_dir": str(work / f"run-{placement['strategy']}"),
        "model": {"path": str(work / "base_model")},
        "data": {"builtin_size": 256, "num_eval": 0},
        "rollout": {"max_new_tokens": 8, "samples_per_prompt": 4},
        "grpo": {"skip_uninformative": False},
        "trainer": {"steps": STEPS, "batch_size": 4, "eval_every": 0, "save_every": 0}
        | {"progress": False, "report_to": []},
        "placement": placement,
    }


def tiny_state_bytes(model_dir: Path) -> float:
    """Weights, gradients and Adam of the tiny model: 16 B/param."""
    from placerl.placement.plan.config import count_params

    return 16.0 * (count_params(model_dir) or 0)


def tiny_model(work: Path) -> float:
    """The tiny model in ``work/base_model``; its state's bytes (weights, gradients, Adam)."""
    from dataclasses import replace

    from placerl.models.factory import TinyLlamaSize, make_model_dir
    from placerl.stages.sources import builtin_corpus

    make_model_dir(work / "base_model", builtin_corpus(), replace(TinyLlamaSize(), **TINY))
    return tiny_state_bytes(work / "base_model")


def local_run(work: Path, state: float) -> dict[str, float]:
    """The local tiny run, in a fresh interpreter: the process baseline and the controller's
    own work a step in-process."""
    import statistics

    local = run_fresh(tiny_config(work, {"strategy": "local", "device": "cpu"}))
    return {
        "process_bytes": float(local["workers"][0]["peak"] - state),
        "step_overhead": max(0.0, statistics.median(local["step_gaps"])),
    }


def ray_run(work: Path, state: float, process_bytes: float, runner=None) -> dict[str, Any]:
    """The tiny run on two Ray workers of one thread (``runner``: ``run_fresh``, or
    ``run_peaks`` in a process that holds a Ray session already): a worker's baseline and
    the controller's work a step with workers; ``process_bytes`` plus a bare Ray worker's
    excess when Ray cannot run here."""
    import statistics

    two_workers = {"strategy": "flatten", "device": "cpu", "num_workers": 2}
    try:
        out = (runner or run_fresh)(tiny_config(work, two_workers | {"threads_per_worker": 1}))
        return {
            "worker_bytes": float(out["workers"][0]["peak"] - state),
            "worker_measured_by": "a Ray worker's run",
            "worker_step_overhead": max(0.0, statistics.median(out["step_gaps"])),
        }
    except (subprocess.SubprocessError, OSError, ValueError, KeyError, IndexError):
        how = "process + a bare Ray worker's excess"
        return {"worker_bytes": float(process_bytes + RAY_WORKER_EXCESS), "worker_measured_by": how}


def measure_runs(log=print) -> dict[str, Any]:
    """Both baselines, in bytes, and both controller overheads, in seconds, with how they were
    measured: the two tiny runs, each in a fresh interpreter."""
    with tempfile.TemporaryDirectory(prefix="placerl-runs-") as tmp:
        work = Path(tmp)
        state = tiny_model(work)
        out = local_run(work, state)
        out |= ray_run(work, state, out["process_bytes"])
    log(runs_line(out))
    return out


def runs_line(out: dict[str, Any]) -> str:
    """What the tiny runs measured, in one line."""
    parts = []
    if "process_bytes" in out:
        parts.append(f"process baseline {out['process_bytes'] / 2**20:.0f} MiB")
    if "worker_bytes" in out:
        parts.append(
            f"Ray worker {out['worker_bytes'] / 2**20:.0f} MiB ({out['worker_measured_by']})"
        )
    if "step_overhead" in out:
        parts.append(f"controller {out['step_overhead'] * 1e3:.1f} ms a step")
    if "worker_step_overhead" in out:
        parts.append(f"{out['worker_step_overhead'] * 1e3:.1f} ms with workers")
    return ", ".join(parts)


if __name__ == "__main__":  # run_fresh's child: a config on stdin, the peaks on stdout
    print(json.dumps(run_peaks(json.loads(sys.stdin.read()))))
