"""``placerl profile``: measure on this machine what the cost model needs (about a minute).

With the configured policy's shape (a randomly initialised Llama of the same dimensions: the
cost is the same), on 1 torch thread and on all of them:

- placerl's own actor and critic updates and forwards (``roles.py``): achieved FLOP/s
  and per-call intercepts, least squares over 3 batch sizes;
- generation with placerl's sampler at 2, 8 and 32 rows for 4 and 36 new tokens: a decode
  step is ``(t36 - t4) / 32``; its intercept over rows, per block, is
  ``decode_overhead_per_layer`` and its slope gives ``decode_flops`` (on a CPU the weights
  stream from cache at these sizes, so ``memory_bw`` is left very large: the intercept holds
  it);
- one AdamW step (parameters per second);
- all-reduce, broadcast and all-gather of 1 and 16 MiB between two processes over gloo, and
  two processes computing at once (``shared_*_factor``);
- a Ray phase call and an update inside Ray actors (``ray_calls.py``);
- two tiny real runs, local and on two Ray workers (``runs.py``): the process baselines
  and the controller's own work a step.

``--device gpu`` measures on a GPU instead (``gpu.py``).

The thread exponent is ``log(Φ_all / Φ_1) / log(threads)``; the 1-thread and all-thread
timings take turns, repeat by repeat (``timed_threads``), so drift does not bend their ratio.
The JSON goes to ``--out`` and to the store (``placement/cost/profiles.py``), keyed by machine, device and
model shape; a later run reuses it.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from placerl.placement.cost.machine import CPU_DEFAULT, Machine
from placerl.placement.cost.profiles import default_path, find_profile, profile_key
from placerl.placement.cost.shapes import ModelShape
from placerl.placement.plan.cluster import available_cores
from placerl.profiling.collectives import measure_collectives
from placerl.profiling.compute import measure_decode_at, measure_optimizer_at
from placerl.profiling.measure import build_model
from placerl.profiling.ray_calls import measure_ray
from placerl.profiling.roles import machine_fields, measure_roles_at, thread_exponent
from placerl.profiling.runs import measure_runs


def run_profile(shape: ModelShape, log=print) -> dict[str, Any]:
    """Every measurement and the fitted ``Machine``."""
    start = time.perf_counter()
    model = build_model(shape)
    threads = available_cores()
    log(f"profiling {shape.name} ({shape.params / 1e6:.1f}M params) on 1 and {threads} threads")
    counts = (1, threads) if threads > 1 else (1,)
    decodes = measure_decode_at(model, shape, counts)
    decode, decode_all = decodes[0], decodes[-1]
    log("decode measured; the optimizer and placerl's role calls next")
    opts = measure_optimizer_at(model, counts)
    opt = opts[0]  # per thread: the slot's rate scales it by its threads
    critic = build_model(shape, value_head=True)
    optimizer_s = [shape.params / o for o in opts]  # each count's, out of its intercepts
    roles = measure_roles_at(model, critic, shape, counts, optimizer_s)
    roles_one, roles_many = roles[0], roles[-1]
    log("placerl's role calls measured; collectives and Ray calls next")
    coll = measure_collectives(shape if threads > 1 else None)
    ray_calls = measure_ray(shape)
    shared = coll["step_alone_s"] / coll["step_shared_s"] if "step_shared_s" in coll else 1.0
    slowed = coll["decode_shared_s"] / coll["decode_alone_s"] if "decode_shared_s" in coll else 1.0
    runs = measure_runs(log)  # process baselines, controller overheads (profiling/runs.py)
    machine = CPU_DEFAULT.with_(
        name=f"cpu (profiled, {threads} cores)",
        decode_flops=decode["decode_flops"],
        memory_bw=1e15,
        decode_overhead_per_layer=decode["decode_overhead_per_layer"],
        decode_overhead_per_layer_all=decode_all["decode_overhead_per_layer"],
        decode_thread_exponent=thread_exponent(
            decode_all["decode_flops"] / decode["decode_flops"], threads
        ),
        optimizer_params_per_s=opt,
        intra_bw=coll["bw"],
        inter_bw=coll["bw"],
        collective_latency=coll["latency"],
        source="profile",
        rpc_latency=ray_calls["rpc_latency"],
        worker_update_factor=ray_calls["worker_update_factor"],
        shared_core_factor=min(1.0, shared),
        shared_overhead_factor=max(1.0, slowed),
        **machine_fields(roles_one, roles_many, threads),
        process_bytes=runs["process_bytes"],
        worker_bytes=runs["worker_bytes"],
        step_overhead=runs["step_overhead"],
        worker_step_overhead=runs.get("worker_step_overhead", CPU_DEFAULT.worker_step_overhead),
    )
    return {
        "key": profile_key("cpu", shape),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(time.perf_counter() - start, 1),
        "machine": asdict(machine),
        "measurements": {
            "decode": decode,
            "decode_all_threads": decode_all,
            "roles_one_thread": roles_one,
            "roles_all_threads": roles_many,
            "optimizer_params_per_s": opt,
            "collectives": coll,
            "ray": ray_calls,
            "runs": runs,
        },
    }


def store_profile(profile: dict, device: str, shape: ModelShape, also=()) -> list[Path]:
    """Write ``profile`` to the store (where runs find it) and to each path of ``also``."""
    text = json.dumps(profile, indent=2)
    paths = [default_path(device, shape), *also]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return paths


def profile_device(choice: str) -> str:
    """The store's device key: ``cpu``, or the GPU's name for ``gpu`` (and ``auto`` with one)."""
    import torch

    from placerl.errors import UserError

    if choice == "gpu" and not torch.cuda.is_available():
        raise UserError("device is gpu but torch sees no CUDA device", where="--device")
    if choice == "cpu" or not torch.cuda.is_available():
        return "cpu"
    from placerl.profiling.gpu import device_label

    return device_label(0)


def profile_command(args) -> int:
    from placerl.placement.cost.shapes import tiny_default

    shape = tiny_default()
    if args.config:
        from placerl.config import load_config
        from placerl.config.schema import RunConfig
        from placerl.placement.cost.workload import policy_shape

        shape = policy_shape(load_config(args.config, list(args.overrides), RunConfig))
    device = profile_device(getattr(args, "device", "cpu"))
    found = find_profile(device, shape)
    if found and found[2] and not args.force:
        raw, path, _ = found
        print(f"reusing the profile of {raw['created']} at {path} (--force to measure again)")
        return 0
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if device == "cpu":
        profile = run_profile(shape, log=log)
    else:
        from placerl.profiling.gpu import run_gpu_profile

        profile = run_gpu_profile(shape, log=log)
    paths = store_profile(profile, device, shape, [Path(args.out)] if args.out else [])
    m = Machine(**profile["machine"])
    print(
        f"profile written to {', '.join(map(str, paths))} in {profile['seconds']} s: "
        f"train {m.train_flops / 1e9:.1f} GFLOP/s/thread, forward {m.forward_flops / 1e9:.1f}, "
        f"decode step overhead {m.decode_overhead_per_layer * 1e6:.0f} us/layer, "
        f"gloo {m.intra_bw / 1e9:.2f} GB/s + {m.collective_latency * 1e6:.0f} us, "
        f"thread exponent {m.thread_exponent:.2f}"
    )
    return 0
