"""Seconds of generating a batch of multi-turn episodes on one worker (``env:``).

The episode runner (rollout/episodes/runner.py) samples every ready episode in one call, runs
each finished turn's environment step on its own thread and samples the next turns together,
keeping each episode's KV cache. So a batch is ``rounds`` sampling calls, each:

- a prefill: the distinct prompts in the first round (as single-turn sampling); after that the
  appended observation tokens of the episodes that go on, at their context (cache kept: the
  prefix is never recomputed);
- ``round_tokens`` decode steps of the round's rows: a batched call decodes until its slowest
  turn ends, so the slowest turn sets the steps, not the mean;
- then, but after the last round, the wait on the environment steps (``tool_s``): the
  sampler idles.

Rows thin out over the rounds (the long tail): every episode takes its first turn, and the
``turns − 1`` further turns an episode takes on average are spread evenly over the remaining
``rounds − 1`` rounds, so the slowest episode keeps the batch sampling to the last round with
few rows, paying each decode step's fixed cost (``decode_step_s``'s intercept) for them.
"""

from __future__ import annotations

from dataclasses import replace

from placerl.placement.cost import time as ct
from placerl.placement.cost.machine import Machine
from placerl.placement.cost.shapes import ModelShape
from placerl.placement.cost.workload import EpisodeShape, Workload
from placerl.placement.plan.plan import DeviceSlot


def round_rows(e: EpisodeShape, rows: float, index: int) -> float:
    """Rows sampled in round ``index`` (from 0): all in the first, then the mean's remainder
    spread over the rest (module doc)."""
    if index == 0 or e.rounds <= 1:
        return rows
    return rows * max(0.0, e.turns - 1.0) / (e.rounds - 1)


def observation_prefill_s(
    shape: ModelShape, m: Machine, slot: DeviceSlot, e: EpisodeShape, rows: float, context: float
) -> float:
    """``rows`` episodes' observation tokens through the model after ``context`` cached ones."""
    tokens = rows * e.observation_tokens
    flops = tokens * shape.flops_per_token(context + e.observation_tokens / 2)
    return flops / m.rate(m.prefill_flops, slot)


def episodes_generate_s(
    shape: ModelShape, m: Machine, slot: DeviceSlot, w: Workload, rows: float
) -> float:
    """A batch of ``rows`` episodes: its rounds of prefill and decode, and its tool waits."""
    e = w.episodes
    assert e is not None, "episodes_generate_s needs a workload with episodes"
    tp = max(1, w.gen_tp)
    first = ct.prefill_s(shape, m, slot, w, rows / w.samples) - m.call_overhead
    seconds, context = first / tp, w.prompt_len
    for index in range(e.rounds):
        active = round_rows(e, rows, index)
        if index:
            seconds += e.tool_s  # the round waits on the last one's environment steps
            seconds += observation_prefill_s(shape, m, slot, e, active, context) / tp
            context += e.observation_tokens
        mean_context = context + e.round_tokens / 2
        step = ct.decode_step_s(shape, m, slot, active, mean_context, w.dtype_bytes, tp)
        seconds += m.call_overhead + e.round_tokens * step
        context += e.turn_tokens
    return seconds


def generate_s(shape: ModelShape, m: Machine, slot: DeviceSlot, w: Workload, rows: float) -> float:
    """One batch's generation: episodes when the workload has them, else one response a row
    (DAPO's further batches: ``phases.step_phases`` charges ``Workload.gen_rounds`` calls)."""
    if w.episodes is None:
        return ct.generate_s(shape, m, slot, w, rows)
    return episodes_generate_s(shape, m, slot, w, rows)


def observed_shape(e: EpisodeShape, rows: list[dict[str, float]]) -> EpisodeShape:
    """``e`` with the means a run measured (its steps' ``env/*`` metrics): turns, model tokens
    a turn, observation tokens, and the tool wait of a round taken as the mean environment
    step over the steps that continue an episode (an episode's last step, its answer's, taken
    as instant). The slowest episode and turn keep ``e``'s values: no metric holds them."""
    rows = [r for r in rows if r.get("env/turns")]
    if not rows:
        return e

    def mean(key: str) -> float:
        return sum(r.get(key, 0.0) for r in rows) / len(rows)

    turns = min(mean("env/turns"), float(e.rounds))
    goes_on = max(turns - 1.0, 0.0)
    return replace(
        e,
        turns=turns,
        turn_tokens=mean("env/tokens_model") / turns,
        observation_tokens=mean("env/tokens_observation") / goes_on if goes_on else 0.0,
        tool_s=mean("env/step_s") * turns / goes_on if goes_on else 0.0,
    )
