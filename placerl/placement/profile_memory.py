"""The memory a placerl process holds besides its models: measured, for the cost model.

On a CPU a slot's peak resident set is not only its tensors. A process that runs placerl's
training stack (torch, transformers, tokenizers, safetensors, placerl, and for a worker Ray
and a torch.distributed group) holds some 400-500 MB of library code and data pages, thread
pools, allocator arenas, the data and the loggers, whatever the model. ``cost_memory`` adds
this as the ``process baseline`` of a slot, so it is measured here, on this machine, not
guessed: a real RL run (GRPO, 2 steps, a checkpoint at the end) of a tiny Llama (h = 64, one
block, 70k parameters), trained in a fresh interpreter,

- ``process_bytes``: with ``placement.strategy: local``, the peak RSS (``VmHWM``) of that
  process;
- ``worker_bytes``: with Flatten on one Ray worker, that worker's peak RSS (read just before
  the runtime stops it: ``run_peaks``); ``process_bytes`` plus a bare Ray worker's excess
  over a bare process when Ray cannot start here;

each less the tiny model's own state (weights, gradients, Adam). A smaller probe (imports, a
forward, a backward, an optimizer step and a generation) misses ~100 MB a real run holds
(380 vs 483 MiB here), so the probe is the run itself.
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


def status_kb(pid: int | str, key: str) -> int:
    """A ``/proc/<pid>/status`` field in kB (VmHWM: peak resident set, VmRSS: current)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


def run_peaks(raw_config: dict[str, Any]) -> dict[str, Any]:
    """Train ``raw_config`` in this process; the peak RSS of every process holding a slot:
    this one under ``local``, else each Ray worker (pids from the runtime, read before it
    stops them). For a fresh interpreter: ``python -m placerl.placement.profile_memory``."""
    import torch

    import placerl.trainer as trainer
    from placerl.config.schema import RunConfig

    cfg = RunConfig.model_validate(raw_config)
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
    controller = status_kb("self", "VmHWM") * 1024
    if not workers:
        workers = [{"rank": 0, "label": "local", "peak": controller}]
    return {"workers": workers, "controller": controller}


def run_fresh(raw_config: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    """``run_peaks`` in a fresh interpreter (nothing of this process counted)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    out = subprocess.run(
        [sys.executable, "-m", "placerl.placement.profile_memory"],
        input=json.dumps(raw_config),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def tiny_config(work: Path, placement: dict[str, Any]) -> dict[str, Any]:
    """A 2-step GRPO run of the tiny model in ``work/base_model``, checkpointed at the end."""
    return {
        "stage": "grpo",
        "seed": 0,
        "run_dir": str(work / f"run-{placement['strategy']}"),
        "model": {"path": str(work / "base_model")},
        "data": {"builtin_size": 256, "num_eval": 0},
        "rollout": {"max_new_tokens": 8, "samples_per_prompt": 4},
        "grpo": {"skip_uninformative": False},
        "trainer": {"steps": 2, "batch_size": 4, "eval_every": 0, "save_every": 0}
        | {"progress": False, "report_to": []},
        "placement": placement,
    }


def tiny_state_bytes(model_dir: Path) -> float:
    """Weights, gradients and Adam of the tiny model: 16 B/param."""
    from placerl.placement.from_config import count_params

    return 16.0 * (count_params(model_dir) or 0)


def measure_memory(log=print) -> dict[str, Any]:
    """Both baselines, in bytes, with how they were measured (``profile.run_profile``)."""
    from dataclasses import replace

    from placerl.models.factory import TinyLlamaSize, make_model_dir
    from placerl.stages.sources import builtin_corpus

    with tempfile.TemporaryDirectory(prefix="placerl-memory-") as tmp:
        work = Path(tmp)
        make_model_dir(work / "base_model", builtin_corpus(), replace(TinyLlamaSize(), **TINY))
        state = tiny_state_bytes(work / "base_model")
        local = run_fresh(tiny_config(work, {"strategy": "local", "device": "cpu"}))
        process = local["workers"][0]["peak"] - state
        one_worker = {"strategy": "flatten", "device": "cpu", "num_workers": 1}
        try:
            ray_run = run_fresh(tiny_config(work, one_worker | {"threads_per_worker": 1}))
            worker, how = ray_run["workers"][0]["peak"] - state, "a Ray worker's run"
        except (subprocess.SubprocessError, OSError, ValueError, KeyError, IndexError):
            worker, how = process + RAY_WORKER_EXCESS, "process + a bare Ray worker's excess"
    log(f"process baseline {process / 2**20:.0f} MiB, Ray worker {worker / 2**20:.0f} MiB ({how})")
    return {
        "process_bytes": float(process),
        "worker_bytes": float(worker),
        "worker_measured_by": how,
    }


if __name__ == "__main__":  # run_fresh's child: a config on stdin, the peaks on stdout
    print(json.dumps(run_peaks(json.loads(sys.stdin.read()))))
