"""``placerl profile``: measure on this machine what the cost model needs (about a minute).

With the configured policy's shape (a randomly initialised Llama of the same dimensions: the
cost is the same), on 1 torch thread and on all of them:

- placerl's own actor and critic updates and forwards (``profile_roles``): achieved FLOP/s
  and per-call intercepts, least squares over 3 batch sizes;
- generation with placerl's sampler at 2, 8 and 32 rows for 4 and 36 new tokens: a decode
  step is ``(t36 - t4) / 32``; its intercept over rows, per block, is
  ``decode_overhead_per_layer`` and its slope gives ``decode_flops`` (on a CPU the weights
  stream from cache at these sizes, so ``memory_bw`` is left very large: the intercept holds
  it);
- one AdamW step (parameters per second);
- all-reduce, broadcast and all-gather of 1 and 16 MiB between two processes over gloo, and
  two processes computing at once (``shared_*_factor``);
- a Ray phase call and an update inside Ray actors (``profile_ray``);
- two tiny real runs, local and on two Ray workers (``profile_runs``): the process baselines
  and the controller's own work a step.

``--device gpu`` measures on a GPU instead (``profile_gpu``).

The thread exponent is ``log(Φ_all / Φ_1) / log(threads)``; the 1-thread and all-thread
timings take turns, repeat by repeat (``timed_threads``), so drift does not bend their ratio.
The JSON goes to ``--out`` and to the store (``profile_store``), keyed by machine, device and
model shape; a later run reuses it.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from placerl.placement.cluster import available_cores
from placerl.placement.machine import CPU_DEFAULT, Machine
from placerl.placement.profile_ray import measure_ray
from placerl.placement.profile_roles import machine_fields, measure_roles_at, thread_exponent
from placerl.placement.profile_runs import measure_runs
from placerl.placement.profile_store import default_path, find_profile, profile_key
from placerl.placement.shapes import ModelShape


def synced(fn, device="cpu"):
    """``fn`` that waits for the device's queued kernels before returning (CUDA runs them
    asynchronously: without this a timer measures the launch, not the work)."""
    import torch

    if torch.device(device).type != "cuda":
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return run


def _timed(fn, repeats: int = 3) -> float:
    """The median of ``repeats`` runs after a warm-up. Not the fastest (``timeit``'s advice
    for code in isolation): a run's step time is the median of steps that meet the machine's
    usual jitter (a shared VM's neighbours, the runtime's own threads), and the fastest of a
    few repeats was 10-25% below it on the 2-core VM the accuracy benchmark ran on."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed_threads(fn, thread_counts, repeats: int = 5) -> list[float]:
    """``_timed`` on each of ``thread_counts`` torch threads, the counts taking turns repeat by
    repeat: a VM's drift (a neighbour, a kernel thread) then slows every count alike, and
    their ratio, the thread exponent, holds (measured one count after the other, it moved
    0.66-0.91 between profiles of the same model here)."""
    import torch

    for n in thread_counts:  # warm-up: each count's thread pool, caches
        torch.set_num_threads(n)
        fn()
    times: list[list[float]] = [[] for _ in thread_counts]
    for _ in range(repeats):
        for i, n in enumerate(thread_counts):
            torch.set_num_threads(n)
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def build_model(shape: ModelShape, value_head: bool = False):
    """A random Llama of ``shape`` (a critic's token-classification head with ``value_head``)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForTokenClassification

    config = LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=512,
        tie_word_embeddings=shape.tied,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        num_labels=1,
    )
    torch.manual_seed(0)
    return (LlamaForTokenClassification if value_head else LlamaForCausalLM)(config)


def measure_decode(model, shape: ModelShape, threads: int, device="cpu") -> dict[str, float]:
    """``measure_decode_at`` on one thread count."""
    return measure_decode_at(model, shape, (threads,), device)[0]


def measure_decode_at(model, shape: ModelShape, thread_counts, device="cpu") -> list[dict]:
    """Decode-step seconds at 2, 8 and 32 rows (``(t36 - t4) / 32`` of placerl's sampler) on
    each thread count (``timed_threads``), fitted by least squares to ``layers · overhead +
    rows · flops_per_token / decode_flops``."""
    import torch

    from placerl.placement.profile_roles import _fit
    from placerl.rollout.sampling import SamplingParams, generate

    prompt, short, long = 8, 4, 36
    steps: list[dict[int, float]] = [{} for _ in thread_counts]
    for rows in (2, 8, 32):
        ids = torch.randint(3, shape.vocab, (rows, prompt)).to(device)
        mask = torch.ones_like(ids)
        times = {}
        for n in (short, long):
            params = SamplingParams(max_new_tokens=n)
            run = synced(
                lambda p=params, ids=ids, mask=mask: generate(
                    model, ids, mask, p, eos_token_id=-1, pad_token_id=0
                ),
                device,
            )
            times[n] = timed_threads(run, thread_counts)
        for i in range(len(thread_counts)):
            steps[i][rows] = max(1e-6, (times[long][i] - times[short][i]) / (long - short))
    context = prompt + (short + long) / 2
    out = []
    for per_rows in steps:
        flops = [r * shape.flops_per_token(context) for r in per_rows]
        rate, icpt = _fit(list(per_rows.values()), flops)
        out.append(
            {
                "decode_step_s": per_rows,
                "decode_overhead_per_layer": icpt / shape.layers,
                "decode_flops": rate,
            }
        )
    return out


def measure_optimizer(model, device="cpu") -> float:
    """Parameters per second of one AdamW step, on the threads torch is set to."""
    import torch

    return measure_optimizer_at(model, (torch.get_num_threads(),), device)[0]


def measure_optimizer_at(model, thread_counts, device="cpu") -> list[float]:
    """``measure_optimizer`` on each of ``thread_counts``, taking turns (``timed_threads``)."""
    import torch

    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    params = sum(p.numel() for p in model.parameters())
    return [params / s for s in timed_threads(synced(opt.step, device), thread_counts)]


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
    ids = torch.randint(3, shape.vocab, (16, 64))
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
        out[f"{name}_alone_s"] = _timed(fn, repeats=3) if rank == 0 else 0.0
        dist.barrier()
        out[f"{name}_shared_s"] = _timed(fn, repeats=3)
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
    result["all_reduce_tiny"] = _timed(lambda: dist.all_reduce(tiny), repeats=20)
    for mib in (1, 16):
        x = torch.ones(mib * 2**20 // 4)
        gathered = [torch.empty_like(x) for _ in range(2)]
        for name, fn in (
            ("all_reduce", lambda x=x: dist.all_reduce(x)),
            ("broadcast", lambda x=x: dist.broadcast(x, 0)),
            ("all_gather", lambda x=x, g=gathered: dist.all_gather(g, x)),
        ):
            dist.barrier()
            result[f"{name}_{mib}"] = _timed(fn, repeats=5)
    result |= _shared_cores(rank, shape, dist)
    if rank == 0:
        out.put(result)
    dist.destroy_process_group()


def run_pair(worker, *args, timeout: float = 120) -> dict[str, float]:
    """``worker(rank, port, queue, *args)`` in two spawned processes that meet on a free local
    port; what rank 0 puts on the queue."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, port, queue, *args)) for r in range(2)]
    for p in procs:
        p.start()
    raw = queue.get(timeout=timeout)
    for p in procs:
        p.join(timeout=timeout / 4)
    return raw


def measure_collectives(shape: ModelShape | None = None) -> dict[str, float]:
    """Two gloo processes on this machine; bandwidth and latency from the all-reduce
    (n = 2: ``t = B/bw + 2·latency``; latency from a one-element all-reduce)."""
    raw = run_pair(_collective_worker, shape)
    latency = raw["all_reduce_tiny"] / 2
    nbytes = 16 * 2**20
    return {**raw, "bw": nbytes / max(raw["all_reduce_16"] - 2 * latency, 1e-6), "latency": latency}


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
    runs = measure_runs(log)  # process baselines, controller overheads (profile_runs.py)
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
    from placerl.placement.profile_gpu import device_label

    return device_label(0)


def profile_command(args) -> int:
    from placerl.placement.shapes import tiny_default

    shape = tiny_default()
    if args.config:
        from placerl.config import load_config
        from placerl.config.schema import RunConfig
        from placerl.placement.workload import policy_shape

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
        from placerl.placement.profile_gpu import run_gpu_profile

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
