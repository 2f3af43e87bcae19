"""What an environment is: the ecosystem's shape (TRL, veRL, OpenAI gym) in two calls.

``reset(row)`` gives the episode's first messages from a dataset row; after each model turn
``step(assistant_message)`` gives the observation messages to append (``role: tool`` results,
or a ``user`` reply), a reward or None, and whether the episode is done. An environment
offering tools declares their JSON schemas (``tool_schemas``) so the chat template can show
them; one without tools declares ``()``.

An environment is built per episode by a factory, named in the config as ``module:factory``
like ``reward.function``, and called with the run's ``EpisodeLimits`` (so its tools honour the
per-call timeout): ``def make_env(limits: EpisodeLimits) -> Environment``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from placerl.rollout.tools.execution import ToolOutcome

Message = dict[str, Any]  # {"role": ..., "content": ...} (+ "name" on tool results)


@dataclass(frozen=True)
class StepResult:
    """What follows a model turn. ``tool_calls``: the calls the turn made and their outcomes
    (for metrics and samples; the observation already holds their messages)."""

    observation: tuple[Message, ...] = ()
    reward: float | None = None
    done: bool = False
    tool_calls: tuple[ToolOutcome, ...] = ()


@runtime_checkable
class Environment(Protocol):
    @property
    def tool_schemas(self) -> Sequence[dict[str, Any]]: ...

    def reset(self, row: Mapping[str, Any]) -> list[Message]: ...

    def step(self, assistant: Message) -> StepResult: ...


@dataclass(frozen=True)
class EpisodeLimits:
    """Bounds on one episode. ``max_tokens`` counts every token after the first prompt, the
    model's and the observations' (it is the width of the response in the training batch)."""

    max_turns: int = 4  # model turns per episode
    max_tokens: int = 512  # model + observation tokens after the first prompt
    tool_timeout_s: float = 10.0  # per tool call; past it the model reads a timeout error
    step_timeout_s: float = 60.0  # per environment step (all of a turn's calls together)
    max_calls_per_turn: int = 8  # calls past this in one turn are refused (bad calls)
    max_result_chars: int = 4000  # a tool result longer than this is cut

    def __post_init__(self) -> None:
        for key in ("max_turns", "max_tokens", "max_calls_per_turn", "max_result_chars"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)}: expected an integer >= 1")
        for key in ("tool_timeout_s", "step_timeout_s"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key}={getattr(self, key)}: expected a number > 0")


EnvFactory = Callable[[EpisodeLimits], Environment]
