"""The profile's two-process measurements: gloo collectives between two processes on this
machine, placerl's own weight sync between them, and how much a slot slows when its neighbour
computes too.

The weight sync (``runtime/sync/transport.broadcast_weights``, what a Separate step or a lagging
rollout copy pays) is measured as it runs, not derived from the all-reduce: the source packs
buckets, gloo moves them, the receiver unpacks them in place, and both sides fingerprint what
they sent and received (the sync guard). On the 2-core VM the all-reduce's bandwidth predicted
0.04 s for a 9M-parameter policy whose sync measured 0.27 s. Two sizes, a one-element state and
``SYNC_REFERENCE_MB`` of model-like tensors, give the fixed part and the per-byte rate, which the
cost model scales to any policy (``placement/cost/time.py::sync_s``); the in-process copy into a
lagging rollout's shadow (``copy_weights``, fingerprint included) gives ``copy_bw``."""

from __future__ import annotations

from typing import Any

from placerl.placement.cost.shapes import ModelShape
from placerl.profiling.measure import build_model, run_pair, timed


def _shared_cores(rank: int, shape: ModelShape | None, dist) -> dict[str, float]:
    """Two kinds of work on 1 thread in rank 0 alone (rank 1 waits), then in both ranks at
    once: a large training step (compute-bound) and a 4-row decode (bound by per-call Python
    and kernel-launch time). How much a slot slows when its neighbour works: shared caches and
    memory bandwidth for the first, the interpreter and the runtime's threads for the second."""
    if shape is None:
        return {}
    import torch

    from placerl.rollout.sampling import SamplingParams, generate

    torch.set_num_threads(1)
    model = build_model(shape)
    ids = torch.randint(3, shape.vocab, (8, 64))
    prompt = torch.randint(3, shape.vocab, (4, 8))

    def step():
        model.zero_grad(set_to_none=True)
        model(input_ids=ids).logits.float().logsumexp(-1).mean().backward()

    def decode():
        params = SamplingParams(max_new_tokens=16)
        generate(model, prompt, torch.ones_like(prompt), params, eos_token_id=-1, pad_token_id=0)

    out = {}
    for name, fn in (("step", step), ("decode", decode)):
        dist.barrier()
        out[f"{name}_alone_s"] = timed(fn, repeats=3) if rank == 0 else 0.0
        dist.barrier()
        out[f"{name}_shared_s"] = timed(fn, repeats=3)
        dist.barrier()
    return out


SYNC_REFERENCE_MB = 32  # 24 tensors of fp32, laid out as a model's (many pieces, one bucket)


def _weight_sync(rank: int, dist) -> dict[str, float]:
    """Seconds of ``broadcast_weights`` from rank 0 to rank 1, as the slower of the two ranks
    sees it (the controller of a sync waits for both): a one-element state, then the reference
    state; and of ``copy_weights`` of the reference state in rank 0 (a lagging rollout's
    shadow copy)."""
    import torch

    from placerl.runtime.sync.transport import broadcast_weights, copy_weights

    numel = SYNC_REFERENCE_MB * 2**20 // 4 // 24
    states = {
        "sync_tiny_s": {"w": torch.ones(1)},
        "sync_reference_s": {f"w{i}": torch.full((numel,), float(i)) for i in range(24)},
    }
    out = {}
    for key, state in states.items():
        dist.barrier()
        seconds = torch.tensor([timed(lambda s=state: broadcast_weights(s, 0), repeats=3)])
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
        out[key] = float(seconds)
    reference = states["sync_reference_s"]
    shadow = {name: t.clone() for name, t in reference.items()}
    dist.barrier()  # rank 0 alone: the in-process copy into a shadow, with its fingerprint
    out["copy_reference_s"] = timed(lambda: copy_weights(reference, shadow)) if rank == 0 else 0.0
    dist.barrier()
    return out


def _collective_worker(rank: int, port: int, out: Any, shape: ModelShape | None = None) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    result = {}
    tiny = torch.ones(1)
    dist.barrier()
    result["all_reduce_tiny"] = timed(lambda: dist.all_reduce(tiny), repeats=20)
    x = torch.ones(16 * 2**20 // 4)  # the model reads bandwidth from 16 MiB all-reduces
    dist.barrier()
    result["all_reduce_16"] = timed(lambda: dist.all_reduce(x), repeats=5)
    result |= _weight_sync(rank, dist)
    result |= _shared_cores(rank, shape, dist)
    if rank == 0:
        out.put(result)
    dist.destroy_process_group()


def measure_collectives(shape: ModelShape | None = None) -> dict[str, float]:
    """Two gloo processes on this machine; bandwidth and latency from the all-reduce
    (n = 2: ``t = B/bw + 2·latency``; latency from a one-element all-reduce); the weight
    sync's fixed seconds and bytes/s (``t = sync_latency + B/sync_bw``)."""
    raw = run_pair(_collective_worker, shape)
    latency = raw["all_reduce_tiny"] / 2
    nbytes = 16 * 2**20
    sync_bytes = SYNC_REFERENCE_MB * 2**20
    sync_latency = raw["sync_tiny_s"]
    sync_bw = sync_bytes / max(raw["sync_reference_s"] - sync_latency, 1e-6)
    return {
        **raw,
        "bw": nbytes / max(raw["all_reduce_16"] - 2 * latency, 1e-6),
        "latency": latency,
        "sync_latency": sync_latency,
        "sync_bw": sync_bw,
        "copy_bw": sync_bytes / max(raw["copy_reference_s"], 1e-6),
    }
