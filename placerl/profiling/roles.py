"""The profile's measurements of placerl's own role calls: what a step's phases really cost.

A bare ``model(ids).backward()`` misses what an RL update does besides the matmuls: the
chunked log-prob head, the clipped loss and its masks, the stats it reads back, the gradient
clip and the non-finite guard, the scheduler. On these small models those are a third of an
update, so the cost model's train and forward rates come from the roles themselves:
``ActorWorker.update`` / ``log_probs`` and ``CriticWorker.update`` / ``values`` on a synthetic
batch (random prompts, a random response of fixed length: the same tensors a rollout hands
over), at three batch sizes of GRPO-like groups and three of PPO-like rows (one sample per
prompt), on 1 thread and on all of them.

Each call's timings are fitted to ``t = a · FLOPs + b`` (the policy's ``+ c`` on grouped
batches: the shared-prompt forward's own fixed cost, ``prefix_*_overhead``) with the FLOPs of the cost model's own
formula (``placement/cost/time.py``'s ``pass_flops``), so the slope is the achieved FLOP/s of placerl's code and
the intercept its fixed cost per call (an update's intercept, less the measured optimizer step,
is ``update_overhead``). The timings are the median of 5 repeats, the thread counts taking turns
(``measure.timed_threads``).
"""

from __future__ import annotations

import math
from typing import Any

from placerl.placement.cost.shapes import ModelShape

# (prompts, samples per prompt, prompt tokens, response tokens): the fitted points. GRPO-like
# groups take the policy's shared-prompt forward, which has a fixed cost of its own (finding
# the distinct prompts, expanding their KV cache: 10-15 ms an update on the 6M model here);
# PPO-like rows (one sample per prompt) take the plain forward
GROUPED = ((1, 4, 8, 8), (2, 4, 12, 16), (8, 4, 12, 32))
PLAIN = ((4, 1, 8, 8), (8, 1, 12, 16), (16, 1, 12, 32))
POINTS = GROUPED + PLAIN
LARGEST_TOKENS = 8 * 12 + 32 * 32  # the largest point's tokens (prompt + responses)
REPEATS = 3  # timed runs of each point and thread count, after a warm-up


def scaled_points(scale: float) -> tuple[tuple[int, int, int, int], ...]:
    """``POINTS`` with their tokens times ``scale`` (<= 1; a larger model's calls cost more per
    token, so the profile times fewer of them): rows and lengths each by ``sqrt(scale)``, at
    least one prompt and two tokens of each kind."""
    k = min(1.0, scale) ** 0.5
    return tuple(
        (max(1, round(p * k)), s, max(2, round(pl * k)), max(2, round(r * k)))
        for p, s, pl, r in POINTS
    )


def points_for(shape: ModelShape, train_flops_per_s: float, seconds: float = 0.3):
    """The points whose largest update takes about ``seconds`` at ``train_flops_per_s``."""
    per_token = 3 * shape.flops_per_token(24)  # forward + backward at a short context
    return scaled_points(seconds * train_flops_per_s / per_token / LARGEST_TOKENS)


def synthetic_batch(shape: ModelShape, prompts: int, samples: int, prompt: int, response: int):
    """A rollout-like batch: ``prompts`` random prompts, each repeated ``samples`` times, and
    random responses of ``response`` tokens with every field an update reads."""
    import torch

    from placerl.types import Batch, Field

    g = torch.Generator().manual_seed(0)
    rows = prompts * samples
    prompt_ids = torch.randint(3, shape.vocab, (prompts, prompt), generator=g)
    prompt_ids = prompt_ids.repeat_interleave(samples, dim=0)
    response_ids = torch.randint(3, shape.vocab, (rows, response), generator=g)
    ones_p, ones_r = torch.ones_like(prompt_ids), torch.ones_like(response_ids)
    zeros = torch.zeros(rows, response)
    return Batch(
        {
            Field.PROMPT_IDS: prompt_ids,
            Field.PROMPT_MASK: ones_p,
            Field.RESPONSE_IDS: response_ids,
            Field.RESPONSE_MASK: ones_r,
            Field.INPUT_IDS: torch.cat([prompt_ids, response_ids], 1),
            Field.ATTENTION_MASK: torch.cat([ones_p, ones_r], 1),
            Field.OLD_LOG_PROBS: zeros - 6.0,
            Field.ADVANTAGES: torch.randn(rows, response, generator=g),
            Field.RETURNS: torch.randn(rows, response, generator=g),
            Field.VALUES: zeros,
        },
        batch_size=[rows],
    )


def _fit_grouped(
    times: list[float], flops: list[float], grouped: list[bool]
) -> tuple[float, float, float]:
    """Least-squares ``t = flops / rate + intercept + [grouped] · extra``: (rate, intercept,
    extra), none negative (a plain ``_fit`` when the points do not tell the two apart)."""
    import numpy as np

    if len(set(grouped)) == 2:
        x = np.array([[f, 1.0, float(g)] for f, g in zip(flops, grouped, strict=True)])
        coef, *_ = np.linalg.lstsq(x, np.array(times), rcond=None)
        slope, icpt, extra = (float(c) for c in coef)
        if slope > 0 and icpt >= 0 and extra >= 0:
            return 1.0 / slope, icpt, extra
    rate, icpt = _fit(times, flops)
    return rate, icpt, 0.0


def _fit(times: list[float], flops: list[float]) -> tuple[float, float]:
    """Least-squares ``t = flops / rate + intercept``: (rate, intercept), neither negative."""
    n = len(times)
    mx, my = sum(flops) / n, sum(times) / n
    sxx = sum((x - mx) ** 2 for x in flops)
    slope = max(sum((x - mx) * (y - my) for x, y in zip(flops, times, strict=True)) / sxx, 1e-15)
    return 1.0 / slope, max(0.0, my - slope * mx)


def measure_roles(
    policy,
    critic,
    shape: ModelShape,
    threads: int,
    optimizer_s: float,
    device="cpu",
    precision: str = "fp32",
) -> dict:
    """``measure_roles_at`` on one thread count (a GPU's: 1 host thread)."""
    return measure_roles_at(policy, critic, shape, (threads,), [optimizer_s], device, precision)[0]


def measure_roles_at(
    policy,
    critic,
    shape: ModelShape,
    thread_counts,
    optimizer_s,
    device="cpu",
    precision: str = "fp32",
    points=POINTS,
    advance=None,
    repeats: int = REPEATS,
) -> list[dict]:
    """Achieved FLOP/s and per-call seconds of the actor's and critic's updates and forwards
    on each of ``thread_counts`` torch threads (CPU; they take turns: ``timed_threads``), or
    on ``device`` in ``precision``, at ``points`` (``POINTS`` or ``scaled_points``; the
    critic's at the one-sample ones only: a value model reads every row's prompt, so grouping
    changes nothing for it). ``optimizer_s``: the measured AdamW step on each count, taken
    out of the update intercepts; ``advance(share)`` reports progress."""
    from placerl.algos.objectives import PolicyObjective, ValueObjective
    from placerl.config.schema import OptimConfig
    from placerl.placement.cost.time import pass_flops
    from placerl.placement.cost.workload import Workload
    from placerl.profiling.measure import synced, timed_threads
    from placerl.roles.actor import ActorWorker
    from placerl.roles.critic import CriticWorker
    from placerl.types import Role

    optim = OptimConfig(lr=1e-9)
    actor = ActorWorker(policy, optim, total_steps=10_000, precision=precision)
    value = CriticWorker(critic, optim, total_steps=10_000, precision=precision)
    value_shape = shape.as_value_model()
    names = ("update", "forward", "critic", "values")
    times: list[dict[str, list[float]]] = [{k: [] for k in names} for _ in thread_counts]
    flops: dict[str, list[float]] = {"policy": [], "value": []}
    for done, (prompts, samples, prompt, response) in enumerate(points):
        batch = synthetic_batch(shape, prompts, samples, prompt, response).to(device)
        w = Workload("profile", (Role.ACTOR,), {}, prompts, samples, prompt, response)
        flops["policy"].append(pass_flops(shape, w, prompts, prompts * samples))
        # the critic reads every row's prompt (no shared-prefix forward): one prompt per row
        flops["value"].append(
            pass_flops(value_shape, w.with_(samples=1), prompts * samples, prompts * samples)
        )
        calls = {
            "update": lambda b=batch: actor.update(b, PolicyObjective()),
            "forward": lambda b=batch: actor.log_probs(b),
        }
        if samples == 1:
            calls["critic"] = lambda b=batch: value.update(b, ValueObjective())
            calls["values"] = lambda b=batch: value.values(b)
        for name, call in calls.items():
            timed = timed_threads(synced(call, device), thread_counts, repeats)
            for i, seconds in enumerate(timed):
                times[i][name].append(seconds)
        if advance is not None:
            advance((done + 1) / len(points))
    grouped = [samples > 1 for _, samples, _, _ in points]
    return [_fitted(t, flops, o, grouped) for t, o in zip(times, optimizer_s, strict=True)]


def _fitted(times, flops: dict[str, list[float]], optimizer_s: float, grouped: list[bool]):
    train = [3 * f for f in flops["policy"]]
    train_rate, train_icpt, train_prefix = _fit_grouped(times["update"], train, grouped)
    forward_rate, forward_icpt, forward_prefix = _fit_grouped(
        times["forward"], flops["policy"], grouped
    )
    value_flops = [f for f, g in zip(flops["value"], grouped, strict=True) if not g]
    critic_rate, critic_icpt = _fit(times["critic"], [3 * f for f in value_flops])
    values_rate, values_icpt = _fit(times["values"], value_flops)
    return {
        "train_flops": train_rate,
        "forward_flops": forward_rate,
        "value_train_flops": critic_rate,
        "value_forward_flops": values_rate,
        # a one-minibatch update's intercept (optimizer step + loss/clip/guard/stats) less the
        # standalone Adam step: negative where the update's own step runs faster (warm
        # caches), the model adding the two back; the policy's and a value model's apart
        # (the actor's is larger: its chunked log-prob head and clipped loss)
        "update_overhead": train_icpt - optimizer_s,
        "prefix_update_overhead": train_prefix,
        "value_update_overhead": critic_icpt - optimizer_s,
        "forward_call_s": forward_icpt,
        "prefix_call_s": forward_prefix,
        "value_call_s": values_icpt,
        "times": times,
        "flops": flops,
    }


def thread_exponent(ratio: float, threads: int) -> float:
    """``x`` with ``threads ** x = ratio`` (all threads' rate over one's), within [0, 1]."""
    if threads <= 1:
        return 1.0
    return min(1.0, max(0.0, math.log(max(ratio, 1e-3)) / math.log(threads)))


def _value_intercepts(one: dict[str, Any], many: dict[str, Any]) -> dict[str, float]:
    """A value model's intercepts and the shared-prompt forward's, where measured."""
    out = {}
    for kind in ("value", "prefix"):
        if f"{kind}_update_overhead" not in one:
            continue
        for field, key in (
            ("update_overhead", f"{kind}_update_overhead"),
            ("call_overhead", f"{kind}_call_s"),
        ):
            out[f"{kind}_{field}"] = one[key]
            out[f"{kind}_{field}_all"] = many[key]
    return out


def machine_fields(one: dict[str, Any], many: dict[str, Any], threads: int) -> dict[str, float]:
    """The Machine's per-thread rates (1 thread), the thread exponent of placerl's updates
    (``log(Φ_all / Φ_1) / log(threads)``) and the per-call intercepts on 1 thread and on all
    (small kernels do not get faster with threads, their synchronisation costs more)."""
    exponent = thread_exponent(many["train_flops"] / one["train_flops"], threads)
    return {
        "train_flops": one["train_flops"],
        "forward_flops": one["forward_flops"],
        "prefill_flops": one["forward_flops"],
        "value_train_flops": one["value_train_flops"],
        "value_forward_flops": one["value_forward_flops"],
        "update_overhead": one["update_overhead"],
        "update_overhead_all": many["update_overhead"],
        "call_overhead": one["forward_call_s"],
        "call_overhead_all": many["forward_call_s"],
        **_value_intercepts(one, many),
        "profiled_threads": threads,
        "thread_exponent": exponent,
    }
