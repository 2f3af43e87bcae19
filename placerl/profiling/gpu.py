"""``placerl profile --device gpu``: the same measurements on a CUDA device.

The role calls (``roles.measure_roles``), the sampler's decode steps and the optimizer
step run on GPU 0 in the run's precision (bf16 by default: what a GPU user trains in), each
timed after ``torch.cuda.synchronize``. Added on a device:

- host ↔ device copies of a pinned 256 MiB buffer: ``host_bw`` (offload, weight sync staging);
- collectives over NCCL between GPU 0 and GPU 1 when two are visible (all-reduce of 1 element
  and of 64 MiB: latency and bus bandwidth from the ring formula); with one GPU the link
  figures stay those of the spec.

The decode fit: on a GPU a few-row step is bound by streaming the weights, so the step's
intercept holds ``params · bytes / memory_bw`` as well as the per-layer launch time; the
spec's HBM bandwidth × the engine's efficiency is taken for ``memory_bw`` and the rest of the
intercept is ``decode_overhead_per_layer``. Constants not measured come from the device's spec
(``placerl/placement/cost/hardware``) when its name matches one, else from the H100's.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from placerl.placement.cost.hardware import device_specs, engine_spec
from placerl.placement.cost.machine import from_spec
from placerl.placement.cost.profiles import profile_key
from placerl.placement.cost.shapes import ModelShape
from placerl.profiling.compute import measure_decode, measure_optimizer
from placerl.profiling.measure import build_model, run_pair, synced, timed
from placerl.profiling.ray_calls import measure_ray
from placerl.profiling.roles import measure_roles

COPY_MIB = 256
COLLECTIVE_MIB = 64


def device_label(index: int = 0) -> str:
    """The store's device key: the GPU's name (``NVIDIA-H200``)."""
    import torch

    return torch.cuda.get_device_name(index).replace(" ", "-")


def spec_for(label: str):
    specs = device_specs()
    for name, spec in specs.items():
        if name in label.upper():
            return spec
    return specs["H100"] if "H100" in specs else next(iter(specs.values()))


def measure_host_copies(device) -> dict[str, float]:
    """Seconds of a pinned host buffer to the device and back; bytes/s of the slower way."""
    import torch

    nbytes = COPY_MIB * 2**20
    host = torch.empty(nbytes, dtype=torch.uint8).pin_memory()
    on_device = torch.empty(nbytes, dtype=torch.uint8, device=device)
    to_device = timed(synced(lambda: on_device.copy_(host, non_blocking=True), device), 5)
    to_host = timed(synced(lambda: host.copy_(on_device, non_blocking=True), device), 5)
    return {"h2d_s": to_device, "d2h_s": to_host, "host_bw": nbytes / max(to_device, to_host)}


def _nccl_worker(rank: int, port: int, out: Any) -> None:
    import torch
    import torch.distributed as dist

    torch.cuda.set_device(rank)
    device = torch.device("cuda", rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    tiny = torch.ones(1, device=device)
    big = torch.ones(COLLECTIVE_MIB * 2**20 // 4, device=device)
    dist.barrier()
    result = {
        "all_reduce_tiny": timed(synced(lambda: dist.all_reduce(tiny), device), 20),
        "all_reduce_big": timed(synced(lambda: dist.all_reduce(big), device), 5),
    }
    if rank == 0:
        out.put(result)
    dist.destroy_process_group()


def measure_nccl() -> dict[str, float] | None:
    """NCCL between GPUs 0 and 1 (None with one GPU); ``t = B/bw + 2·latency`` for n = 2."""
    import torch

    if torch.cuda.device_count() < 2:
        return None
    raw = run_pair(_nccl_worker, timeout=300)
    latency = raw["all_reduce_tiny"] / 2
    nbytes = COLLECTIVE_MIB * 2**20
    bw = nbytes / max(raw["all_reduce_big"] - 2 * latency, 1e-9)
    return {**raw, "bw": bw, "latency": latency}


def gpu_machine(
    shape: ModelShape,
    label: str,
    roles: dict,
    decode: dict,
    opt: float,
    copies: dict,
    nccl: dict | None,
    rpc: float | None,
    dtype_bytes: int,
):
    """The fitted GPU ``Machine``: measured where measured, the spec's figures elsewhere
    (``rpc`` None: Ray is not installed, the spec's call latency stays)."""
    base = from_spec(spec_for(label), engine_spec("placerl"))
    streamed = shape.params * dtype_bytes / base.memory_bw
    per_layer = max(0.0, decode["decode_overhead_per_layer"] - streamed / shape.layers)
    changes = {
        "name": f"{label} (profiled)",
        "train_flops": roles["train_flops"],
        "forward_flops": roles["forward_flops"],
        "prefill_flops": roles["forward_flops"],
        "value_train_flops": roles["value_train_flops"],
        "value_forward_flops": roles["value_forward_flops"],
        "update_overhead": roles["update_overhead"],
        "call_overhead": roles["forward_call_s"],
        "value_update_overhead": roles["value_update_overhead"],
        "value_call_overhead": roles["value_call_s"],
        "prefix_update_overhead": roles.get("prefix_update_overhead", 0.0),
        "prefix_call_overhead": roles.get("prefix_call_s", 0.0),
        "decode_flops": decode["decode_flops"],
        "decode_overhead_per_layer": per_layer,
        "optimizer_params_per_s": opt,
        "host_bw": copies["host_bw"],
        "source": "profile",
    }
    if rpc is not None:
        changes["rpc_latency"] = rpc
    if nccl:
        changes |= {"intra_bw": nccl["bw"], "collective_latency": nccl["latency"]}
    return base.with_(**changes)


def ray_call_latency(shape: ModelShape, log=print) -> float | None:
    """A Ray phase call's round trip; None where Ray is not installed (a one-GPU machine runs
    the local plan without it)."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        log("Ray is not installed: the phase-call latency stays the spec's")
        return None
    return measure_ray(shape, worker_update=False)["rpc_latency"]


def run_gpu_profile(shape: ModelShape, precision: str = "bf16", log=print) -> dict[str, Any]:
    """Every measurement on GPU 0 and the fitted ``Machine``."""
    import torch

    start = time.perf_counter()
    device = torch.device("cuda", 0)
    label = device_label(0)
    log(f"profiling {shape.name} ({shape.params / 1e6:.1f}M params) on {label} in {precision}")
    model = build_model(shape).to(device)
    critic = build_model(shape, value_head=True).to(device)
    opt = measure_optimizer(model, device)
    roles = measure_roles(model, critic, shape, 1, shape.params / opt, device, precision)
    decode = measure_decode(model, shape, 1, device)
    log("compute and decode measured; copies, NCCL and a Ray call next")
    copies = measure_host_copies(device)
    nccl = measure_nccl()
    rpc = ray_call_latency(shape, log)
    dtype_bytes = 2 if precision == "bf16" else 4
    machine = gpu_machine(shape, label, roles, decode, opt, copies, nccl, rpc, dtype_bytes)
    return {
        "key": profile_key(label, shape),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(time.perf_counter() - start, 1),
        "machine": asdict(machine),
        "measurements": {
            "roles": roles,
            "decode": decode,
            "optimizer_params_per_s": opt,
            "host_copies": copies,
            "nccl": nccl,
            "rpc_latency": rpc,
            "precision": precision,
        },
    }
