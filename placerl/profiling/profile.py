"""``placerl profile``: measure on this machine what the cost model needs (within a minute).

With the configured policy's shape (a randomly initialised Llama of the same dimensions: the
cost is the same), on 1 torch thread and on all of them:

- placerl's own actor and critic updates and forwards (``roles.py``): achieved FLOP/s and
  per-call intercepts, least squares over 3 batch sizes of GRPO-like groups and 3 of PPO-like
  rows, sized so the largest update takes about 0.3 s whatever the model (``points_for``);
- generation with placerl's sampler at 3 row counts for 4 and 36 new tokens: a decode step is
  ``(t36 - t4) / 32``; its intercept over rows, per block, is ``decode_overhead_per_layer``
  and its slope gives ``decode_flops`` (on a CPU the weights stream from cache at these
  sizes, so ``memory_bw`` is left very large: the intercept holds it);
- one AdamW step (parameters per second);
- once per machine, not per model (``machine.py``): gloo collectives and shared cores between
  two processes, a Ray phase call and a worker's update, two tiny real runs (process
  baselines, the controller's own work a step).

Why these: a step's time is these calls' (generation, forwards, updates, the optimizer), what
Ray and gloo add between processes, and what the controller does besides; the cost model
(``placement/cost``) combines them for any Plan, batch and length.

It is time-boxed (``BUDGET_S``, 60 s): the model's own measurements come first; a machine-wide
part with no room left keeps the defaults and is measured next time. A progress bar (rich)
shows what is measured and the time left. The profile records the conditions it was measured
under (``placement/cost/conditions.py``): a probe before and after (their mean is kept), so a
later use can tell whether the machine still runs like this. ``--device gpu`` measures on a GPU (``gpu.py``).

The thread exponent is ``log(Φ_all / Φ_1) / log(threads)``; the 1-thread and all-thread
timings take turns, repeat by repeat (``timed_threads``), so drift does not bend their ratio.
The JSON goes to ``--out`` and to the store (``placement/cost/profiles.py``), keyed by
machine, device and model shape; later runs reuse it while its conditions hold.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from placerl.placement.cost.conditions import Conditions, compare, mean, probe, remember
from placerl.placement.cost.machine import CPU_DEFAULT, Machine
from placerl.placement.cost.profiles import default_path, profile_key
from placerl.placement.cost.shapes import ModelShape, tiny_default
from placerl.placement.plan.cluster import available_cores
from placerl.profiling import measure
from placerl.profiling.compute import (
    REPEATS,
    decode_rows_for,
    measure_decode_at,
    measure_optimizer_at,
)
from placerl.profiling.machine import PARTS, measure_part, stored_part
from placerl.profiling.measure import build_model
from placerl.profiling.progress import Steps
from placerl.profiling.roles import (
    machine_fields,
    measure_roles_at,
    points_for,
    thread_exponent,
)

BUDGET_S = 60.0
# placerl's calls against the probe's reference matmul on 1 thread, only to size the points
# and estimate the time (a 2-core Xeon VM: an update ran at 0.6-0.8 of it, a decode step's
# matmuls at 0.1-0.3); Adam's parameters a second on 1 thread
TRAIN_SHARE, DECODE_SHARE, ADAM_PARAMS_PER_S = 0.7, 0.25, 1.3e8


def repeats_for(shape: ModelShape) -> int:
    """Timed repeats of each measurement: 3, or 2 for a model over 20M parameters (its calls
    take longer: fewer fit in the time box, and each is less noisy)."""
    return REPEATS if shape.params < 20e6 else REPEATS - 1


def decode_tokens_for(shape: ModelShape) -> int:
    """The long generation's new tokens: 36 (32 timed decode steps), 20 over 20M parameters."""
    return 36 if shape.params < 20e6 else 20


def estimates(shape: ModelShape, points, rows, matmul: float, threads: int) -> dict[str, float]:
    """Rough seconds of each of the model's measurements (for the progress bar)."""
    from placerl.placement.cost.time import pass_flops
    from placerl.placement.cost.workload import Workload
    from placerl.types import Role

    runs = (1 + repeats_for(shape)) * (1 + (threads > 1) / 1.6)  # warm-up + repeats, 1 and all
    train, adam = TRAIN_SHARE * matmul, shape.params / ADAM_PARAMS_PER_S
    roles = 0.0
    for prompts, samples, prompt, response in points:
        w = Workload("profile", (Role.ACTOR,), {}, prompts, samples, prompt, response)
        flops = pass_flops(shape, w, prompts, prompts * samples)
        calls = 1 if samples > 1 else 2  # the actor's; and the critic's on plain rows
        roles += calls * (4 * flops / train + adam + 0.025)
    tokens = 4 + decode_tokens_for(shape)
    decode = sum(
        tokens * (shape.layers * 6e-4 + r * shape.flops_per_token(24) / (DECODE_SHARE * matmul))
        for r in rows
    )
    return {
        "build": 0.5 + shape.params / 2e7,
        "decode": decode * runs,
        "optimizer": adam * runs,
        "roles": roles * runs,
    }


def measure_model(shape: ModelShape, steps: Steps, now: Conditions, est: dict) -> dict:
    """The model's own measurements (decode, optimizer, role calls) on 1 and all threads."""
    counts = (1, now.threads) if now.threads > 1 else (1,)
    matmul = now.matmul_1 * 1e9
    with steps.step(f"a random {shape.params / 1e6:.1f}M-parameter model", est["build"]):
        model = build_model(shape)
        critic = build_model(shape, value_head=True)
    rows = decode_rows_for(shape, DECODE_SHARE * matmul)
    repeats = repeats_for(shape)
    with steps.step(f"decode steps of placerl's sampler ({rows} rows)", est["decode"]) as adv:
        decodes = measure_decode_at(
            model,
            shape,
            counts,
            row_counts=rows,
            advance=adv,
            repeats=repeats,
            long=decode_tokens_for(shape),
        )
    with steps.step("an AdamW step", est["optimizer"]):
        opts = measure_optimizer_at(model, counts, repeats=repeats)
    points = points_for(shape, TRAIN_SHARE * matmul)
    optimizer_s = [shape.params / o for o in opts]  # each count's, out of its intercepts
    with steps.step("the actor's and critic's updates and forwards", est["roles"]) as adv:
        roles = measure_roles_at(
            model, critic, shape, counts, optimizer_s, points=points, advance=adv, repeats=repeats
        )
    return {"decodes": decodes, "opts": opts, "roles": roles, "points": points, "rows": rows}


def fit(threads: int, own: dict, machine_fields_: dict) -> Machine:
    decode, decode_all = own["decodes"][0], own["decodes"][-1]
    roles_one, roles_many = own["roles"][0], own["roles"][-1]
    return CPU_DEFAULT.with_(
        name=f"cpu (profiled, {threads} cores)",
        decode_flops=decode["decode_flops"],
        memory_bw=1e15,
        decode_overhead_per_layer=decode["decode_overhead_per_layer"],
        decode_overhead_per_layer_all=decode_all["decode_overhead_per_layer"],
        decode_thread_exponent=thread_exponent(
            decode_all["decode_flops"] / decode["decode_flops"], threads
        ),
        optimizer_params_per_s=own["opts"][0],  # per thread: a slot scales it by its threads
        source="profile",
        **machine_fields(roles_one, roles_many, threads),
        **machine_fields_,
    )


def busy_factor(load_avg: float, threads: int) -> float:
    """How much longer the measurements take than on an idle machine: the profile's process
    shares the cores with ``load_avg`` runnable others (1 on an idle machine is background).
    A 6M model: 58 s at load 1.5 (x1.25 here); 367 s at load 6-8 on 2 cores (x3.5-4.5)."""
    return max(1.0, (load_avg + 1.0) / threads)


def run_profile(shape: ModelShape, log=print, budget_s: float = BUDGET_S, show=None) -> dict:
    """Every measurement and the fitted ``Machine``, within about ``budget_s`` seconds."""
    import torch

    start = time.perf_counter()
    threads = available_cores()
    torch_threads = torch.get_num_threads()  # the measurements set their own; restored after
    now = probe(threads)
    part = stored_part(now)
    points = points_for(shape, TRAIN_SHARE * now.matmul_1 * 1e9)
    rows = decode_rows_for(shape, DECODE_SHARE * now.matmul_1 * 1e9)
    est = estimates(shape, points, rows, now.matmul_1 * 1e9, threads)
    machine_s = sum(e for name, _, e in PARTS if getattr(part, name) is None)
    slower = busy_factor(now.load_avg, threads)
    total = (sum(est.values()) + machine_s) * slower + 1.0
    log(
        f"profiling {shape.name} ({shape.params / 1e6:.1f}M params) on 1 and {threads} threads, "
        f"about {total:.0f} s (load average {now.load_avg:.1f}); machine-wide parts: {part.note}"
    )
    if slower > 1.5:
        log(
            f"profile: the machine is busy (load average {now.load_avg:.1f} on {threads} cores): "
            "it takes longer, and it measures a busy machine (a later use on a quiet one "
            "rescales or refuses it: profile where and as the runs will run)"
        )
    measure.retaken.clear()
    try:
        with Steps(total, log, show) as steps:
            own = measure_model(shape, steps, now, est)
            part = measure_part(part, steps, budget_s, now, log)
            with steps.step("the machine's conditions again", 1.0):
                end = probe(threads)
    finally:  # a run that profiles first (strategy auto) trains on after, on its threads
        torch.set_num_threads(torch_threads)
    if measure.retaken:
        log(
            f"profile: {len(measure.retaken)} measurement(s) taken again: more threads ran up to "
            f"{max(measure.retaken):.1f}x slower than one (another process held a core)"
        )
    drift = compare(now, end)
    if not (drift.usable and not drift.rescaled):
        log(f"profile: the machine changed while it was measured: {drift.reason}")
    remember(end)
    machine = fit(threads, own, part.fields(threads))
    return {
        "key": profile_key("cpu", shape),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(time.perf_counter() - start, 1),
        "conditions": mean(now, end).to_dict(),  # what a later use is checked against
        "conditions_start": now.to_dict(),
        "conditions_end": end.to_dict(),
        "machine": asdict(machine),
        "measurements": _measurements(own, part, steps.times),
    }


def _measurements(own: dict, part, step_seconds) -> dict:
    """What the profile measured, as stored beside the fitted ``Machine``: this model's own
    timings on one and all threads, the machine-wide part, and how long each step took."""
    return {
        "decode": own["decodes"][0],
        "decode_all_threads": own["decodes"][-1],
        "roles_one_thread": own["roles"][0],
        "roles_all_threads": own["roles"][-1],
        "optimizer_params_per_s": own["opts"][0],
        "points": own["points"],
        "decode_rows": own["rows"],
        "machine_wide": part.note,
        "collectives": part.collectives,
        "ray": part.ray,
        "runs": part.runs,
        "step_seconds": step_seconds,
        "retaken": [round(r, 2) for r in measure.retaken],
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


def profile_here(device: str, shape: ModelShape, say, budget_s: float = BUDGET_S) -> Path:
    """Measure ``shape`` on ``device`` and store the profile: ``strategy: auto`` and
    ``placerl plan --auto`` call this where no stored profile is usable."""
    log = say or (lambda m: print(m, file=sys.stderr))
    if device == "cpu":
        profile = run_profile(shape, log=log, budget_s=budget_s)
    else:
        from placerl.profiling.gpu import run_gpu_profile

        profile = run_gpu_profile(shape, log=log)
    path = store_profile(profile, device, shape)[0]
    log(f"profile: written to {path} in {profile['seconds']} s")
    return path


def profile_command(args) -> int:
    from placerl.placement.cost.calibration import calibrate

    shape = tiny_default()
    if args.config:
        from placerl.config import load_config
        from placerl.config.schema import RunConfig
        from placerl.placement.cost.workload import policy_shape

        shape = policy_shape(load_config(args.config, list(args.overrides), RunConfig))
    device = profile_device(getattr(args, "device", "cpu"))
    if not args.force:
        found = calibrate(device, shape)
        if found.usable and found.distance == 0:
            raw = json.loads(found.path.read_text())
            print(
                f"reusing the profile of {raw['created']} at {found.path} "
                f"({found.note.split('; ')[-2]}; --force to measure again)"
            )
            return 0
        for refusal in found.refusals:
            print(f"placerl: {refusal}", file=sys.stderr)
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
