"""Driving a batch of episodes turn by turn: sample, step the environments, bridge, sample.

The loop, for placerl's sampler or any engine behind ``TurnSampler``:

1. every episode that is ready for a model turn goes into one sampling call (its first
   prompt, or its observation tokens appended to its kept context);
2. each finished turn's environment step (its tool calls) starts at once on a worker thread
   of its own, so the tools of all episodes run concurrently, and keep running while the
   sampler works on other episodes;
3. the loop waits for the *first* step to finish, then ``gather_s`` longer for others (to batch
   them), and samples the next turn of those that are ready — episodes whose tools are still
   running join a later call. A slow tool therefore delays its own episode and no other,
   except as far as batching goes: the sampler is one batched loop, so an episode that
   becomes ready while a call runs waits for that call to end (at most one turn's decode).

Noise: each episode draws from its own ``uniforms`` row per turn (``draw_uniforms``), so its
tokens do not depend on which other episodes share a sampling call — the same seed gives the
same episodes however the tools' timing groups them (up to float rounding of differently
shaped batches, as for single-turn sampling).

Limits (``EpisodeLimits``): ``max_turns`` model turns; ``max_tokens`` tokens after the first
prompt, observations included (a turn's limit is what is left of it; an observation that
leaves no room for a next token ends the episode before it is appended, so an episode always
ends on a model token); ``step_timeout_s`` per environment step.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from placerl.errors import UserError
from placerl.rollout.continuation import Context, TurnRequest, TurnResult
from placerl.rollout.envs.loading import describe, start_environment
from placerl.rollout.envs.protocol import EnvFactory, Environment, EpisodeLimits, StepResult
from placerl.rollout.episodes.bridge import ChatBridge
from placerl.rollout.episodes.record import EndReason, Episode, Segment, Source, Turn
from placerl.rollout.tools.execution import Ran, in_daemon_thread


class TurnSampler(Protocol):
    """An engine that samples one turn for each request (episodes/engines.py)."""

    def sample(self, requests: Sequence[TurnRequest]) -> list[TurnResult]: ...


def draw_uniforms(
    episodes: int, limits: EpisodeLimits, max_new_tokens: int, generator: torch.Generator | None
) -> Tensor:
    """(E, max_turns, max_new_tokens) float32 uniforms: each episode's noise, turn by turn."""
    shape = (episodes, limits.max_turns, max_new_tokens)
    return torch.rand(shape, generator=generator, dtype=torch.float32)


@dataclass
class _Live:
    """An episode under way: its environment, what its next turn appends, its kept context."""

    index: int
    episode: Episode
    env: Environment
    bridge: ChatBridge
    new_ids: tuple[int, ...]
    context: Context | None = None
    used: int = 0  # tokens after the first prompt so far
    last: TurnResult | None = None
    step_started: float = 0.0


def run_episodes(
    sampler: TurnSampler,
    factory: EnvFactory,
    rows: Sequence[Mapping[str, Any]],
    tokenizer,
    limits: EpisodeLimits,
    *,
    max_new_tokens: int,
    uniforms: Tensor | None = None,
    gather_s: float = 0.005,
    where: str = "env.factory",
    context: int | None = None,
) -> list[Episode]:
    """One episode per row, all run to their end; episodes in row order. ``uniforms``
    (E, max_turns, ≥ max_new_tokens) is the episodes' noise (``draw_uniforms``); None only for
    a greedy sampler. ``where`` names the factory's config key in errors. ``context``: the
    model's positions, which a first prompt plus ``limits.max_tokens`` must fit."""
    lives = [_start(i, row, factory, tokenizer, limits, where) for i, row in enumerate(rows)]
    if context is not None:
        _check_fits(lives, limits, context)
    ready = list(lives)
    stepping: dict[Future, _Live] = {}
    while ready or stepping:
        if ready:
            requests = [_request(live, limits, max_new_tokens, uniforms) for live in ready]
            for live, result in zip(ready, sampler.sample(requests)):
                stepping[_take_turn(live, result, tokenizer)] = live
            ready = []
        for future in _wait_some(stepping, limits.step_timeout_s, gather_s):
            live = stepping.pop(future)
            if _after_step(live, future, limits, max_new_tokens):
                ready.append(live)
    return [live.episode for live in lives]


def _start(
    index: int,
    row: Mapping[str, Any],
    factory: EnvFactory,
    tokenizer,
    limits: EpisodeLimits,
    where: str,
) -> _Live:
    env = start_environment(factory, limits, where)
    try:
        messages = env.reset(row)
    except UserError:
        raise
    except (Exception, SystemExit) as err:
        raise UserError(f"the environment's reset raised {describe(err)}", where) from err
    bridge = ChatBridge(tokenizer, env.tool_schemas)
    prompt = tuple(bridge.prompt_ids(messages))
    episode = Episode(row=row, messages=list(messages), prompt_ids=prompt)
    return _Live(index, episode, env, bridge, new_ids=prompt)


def _check_fits(lives: Sequence[_Live], limits: EpisodeLimits, context: int) -> None:
    longest = max(lives, key=lambda live: len(live.episode.prompt_ids), default=None)
    if longest is None or len(longest.episode.prompt_ids) + limits.max_tokens <= context:
        return
    n = len(longest.episode.prompt_ids)
    raise UserError(
        f"the environment's first prompt of row {longest.index} is {n} tokens; with "
        f"env.max_tokens={limits.max_tokens} after it that is {n + limits.max_tokens}, beyond "
        f"the model's {context} positions; lower env.max_tokens or shorten the prompts",
        where="env.max_tokens",
    )


def _request(
    live: _Live, limits: EpisodeLimits, max_new_tokens: int, uniforms: Tensor | None
) -> TurnRequest:
    turn = len(live.episode.turns)
    room = limits.max_tokens - live.used - (len(live.new_ids) if turn else 0)
    noise = None if uniforms is None else uniforms[live.index, turn]
    return TurnRequest(
        ids=live.new_ids,
        context=live.context,
        max_new_tokens=min(max_new_tokens, room),
        uniforms=noise,
        keep=turn + 1 < limits.max_turns,
    )


def _take_turn(live: _Live, result: TurnResult, tokenizer) -> Future:
    """Record the model's turn and start its environment step; returns the step's future."""
    episode = live.episode
    if episode.turns:  # not the first turn: the observation tokens it was sampled after
        episode.segments.append(Segment(Source.OBSERVATION, live.new_ids))
        live.used += len(live.new_ids)
    episode.segments.append(Segment(Source.MODEL, result.ids, result.log_probs))
    live.used += len(result.ids)
    live.last = result
    text = tokenizer.decode(list(result.ids), skip_special_tokens=True)
    assistant = {"role": "assistant", "content": text}
    episode.messages.append(assistant)
    episode.turns.append(Turn(text, len(result.ids), None, ended=result.ended))
    live.step_started = time.monotonic()
    return in_daemon_thread(live.env.step, assistant)


def _wait_some(stepping: dict[Future, _Live], timeout_s: float, gather_s: float) -> list[Future]:
    """The steps that finished (at least one, or one past its timeout): the first, then any
    finishing within ``gather_s`` of it."""
    if not stepping:
        return []
    deadline = min(live.step_started for live in stepping.values()) + timeout_s
    done, _ = wait(
        stepping, timeout=max(0.0, deadline - time.monotonic()), return_when=FIRST_COMPLETED
    )
    if done and gather_s > 0 and len(done) < len(stepping):
        done, _ = wait(stepping, timeout=gather_s, return_when=ALL_COMPLETED)
    now = time.monotonic()
    expired = {f for f, live in stepping.items() if now - live.step_started >= timeout_s}
    return [f for f in stepping if f in done or f in expired]


def _after_step(live: _Live, future: Future, limits: EpisodeLimits, max_new_tokens: int) -> bool:
    """Record the step's outcome; True if the episode goes on to another turn."""
    episode, result = live.episode, live.last
    seconds = time.monotonic() - live.step_started
    if not future.done():  # past its timeout: the thread is abandoned, the episode ends
        episode.end = EndReason.STEP_TIMEOUT
        return False
    step = _step_result(future.result())
    episode.turns[-1] = dataclasses.replace(episode.turns[-1], step=step, step_seconds=seconds)
    if not result.ended:  # cut by a token limit: whatever the environment made of it
        cut_by_budget = live.used >= limits.max_tokens
        episode.end = EndReason.MAX_TOKENS if cut_by_budget else EndReason.TRUNCATED
    elif step.done:
        episode.end = EndReason.DONE
    elif len(episode.turns) >= limits.max_turns:
        episode.end = EndReason.MAX_TURNS
    if episode.end is not None:
        return False
    bridge = tuple(live.bridge.observation_ids(step.observation, result.ids[-1]))
    if live.used + len(bridge) + 1 > limits.max_tokens:
        episode.end = EndReason.MAX_TOKENS
        return False
    if result.context is None:
        raise RuntimeError("the sampler kept no context for a turn that goes on")
    episode.messages.extend(step.observation)
    live.new_ids, live.context = bridge, result.context
    return True


def _step_result(ran: Ran) -> StepResult:
    """The step's result, or the environment's own failure as a user error."""
    if ran.error is not None:
        if isinstance(ran.error, UserError):
            raise ran.error
        raise UserError(
            f"the environment's step raised {describe(ran.error)}", "env"
        ) from ran.error
    if not isinstance(ran.value, StepResult):
        raise UserError(
            f"the environment's step returned {type(ran.value).__name__}, expected StepResult",
            "env",
        )
    return ran.value
