"""The memory a placerl process holds before any model of a run: measured, for the cost model.

On a CPU a slot's peak resident set is not only its tensors. A process that has imported
placerl's training stack (torch, transformers, tokenizers, safetensors, placerl) and run a
forward, a backward, an optimizer step and a generation holds some 380 MB of library code and
data pages, thread pools and allocator arenas before it loads a model of its own; a Ray
worker holds more (Ray's core worker, its gRPC threads, the torch.distributed group it
joins). ``cost_memory`` adds these as the ``process baseline`` of a slot, so they are
measured here, on this machine, in fresh processes, not guessed:

- ``process_bytes``: peak RSS (``VmHWM``) of ``python -c <PROBE>``: the imports of
  ``placerl train``, then one training step and one generation with a tiny model (so that
  the code paths a run touches are resident), less that model's own state;
- ``worker_bytes``: the same probe inside a Ray actor of a local Ray (one CPU), after joining a
  one-process gloo group as a ``RoleHost`` does; ``process_bytes`` plus the difference of a
  bare Ray worker and a bare process when Ray cannot start.

Each is a fresh interpreter, so nothing the profiling process itself holds is counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

TINY = dict(layers=1, hidden=64, intermediate=128, heads=4, kv_heads=2, vocab=512)

# Runs in a fresh interpreter (and in a Ray actor): the imports of a run, one tiny training
# step and one generation, then prints {"peak": VmHWM bytes, "state": the tiny model's bytes}.
PROBE = """
import json, os
def _status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
def probe(gloo=False):
    import torch
    import placerl.trainer  # noqa: F401  (what `placerl train` imports)
    if gloo:
        import socket
        import torch.distributed as dist
        import placerl.runtime.ray.host  # noqa: F401  (what a RoleHost imports)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    from placerl.placement.profile import build_model
    from placerl.placement.shapes import ModelShape
    from placerl.rollout.sampling import SamplingParams, generate
    torch.set_num_threads(1)
    model = build_model(ModelShape("probe", **SHAPE))
    ids = torch.randint(3, SHAPE["vocab"], (2, 8))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model(input_ids=ids).logits.float().logsumexp(-1).mean().backward()
    opt.step()
    with torch.no_grad():
        generate(model, ids, torch.ones_like(ids), SamplingParams(max_new_tokens=4),
                 eos_token_id=-1, pad_token_id=0)
    state = 16 * sum(p.numel() for p in model.parameters())  # weights, grads, Adam
    if gloo:
        dist.destroy_process_group()
    return {"peak": _status("VmHWM"), "state": state}
"""

RAY_MAIN = """
import json, ray
ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
@ray.remote(num_cpus=1)
class Probe:
    def run(self):
        return probe(gloo=True), _status("VmHWM")
print(json.dumps(ray.get(Probe.remote().run.remote())[0]))
ray.shutdown()
"""


def _python(code: str, timeout: float = 180) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter with this one's path; its last stdout line as JSON."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    out = subprocess.run(
        [sys.executable, "-c", f"SHAPE = {TINY!r}\n{PROBE}\n{code}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def baseline(result: dict[str, Any]) -> float:
    """A probe's peak RSS less its tiny model's own state (weights, gradients, Adam)."""
    return float(result["peak"] - result["state"])


def measure_process() -> float:
    """``process_bytes``: a fresh placerl training process before its models."""
    return baseline(_python("print(json.dumps(probe()))"))


def measure_worker(process_bytes: float) -> tuple[float, str]:
    """``worker_bytes`` and how it was measured: the probe in a Ray actor; when Ray cannot
    start here, ``process_bytes`` plus a bare Ray worker's excess over a bare process."""
    try:
        return baseline(_python(RAY_MAIN)), "ray actor"
    except (subprocess.SubprocessError, OSError, ValueError):
        return process_bytes + RAY_WORKER_EXCESS, "process + a bare Ray worker's excess"


# A bare Ray worker (default_worker.py, nothing imported) minus a bare interpreter, measured
# on a 2-core x86 VM: 78 MB vs 10 MB. Used only when the Ray probe above cannot run.
RAY_WORKER_EXCESS = 68 * 2**20


def measure_memory(log=print) -> dict[str, Any]:
    """Both baselines, in bytes, with how they were measured (``profile.run_profile``)."""
    process = measure_process()
    worker, how = measure_worker(process)
    log(f"process baseline {process / 2**20:.0f} MiB, Ray worker {worker / 2**20:.0f} MiB ({how})")
    return {"process_bytes": process, "worker_bytes": worker, "worker_measured_by": how}
