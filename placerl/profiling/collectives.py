"""The profile's two-process measurements: gloo collectives between two processes on this
machine, and how much a slot slows when its neighbour computes too."""

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
    result |= _shared_cores(rank, shape, dist)
    if rank == 0:
        out.put(result)
    dist.destroy_process_group()


def measure_collectives(shape: ModelShape | None = None) -> dict[str, float]:
    """Two gloo processes on this machine; bandwidth and latency from the all-reduce
    (n = 2: ``t = B/bw + 2·latency``; latency from a one-element all-reduce)."""
    raw = run_pair(_collective_worker, shape)
    latency = raw["all_reduce_tiny"] / 2
    nbytes = 16 * 2**20
    return {**raw, "bw": nbytes / max(raw["all_reduce_16"] - 2 * latency, 1e-6), "latency": latency}
