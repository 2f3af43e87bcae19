"""An episode as it happened: the conversation in messages, and the token ids in the exact
order the model saw them — the first prompt, then the model's turns (its own sampled ids,
with their behaviour log-probs) and the observation tokens appended between them.

The token ids are the truth the trainer trains on. The messages are for people (samples,
rewards over the conversation): rendering them again with the chat template does not give
back these ids (episodes/retokenize.py shows where), which is why nothing downstream does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any

from placerl.rollout.envs.protocol import Message, StepResult


class Source(IntEnum):
    """Who produced a token of the response."""

    OBSERVATION = 0  # tool results, the template's turn markup: context, no gradient
    MODEL = 1  # sampled by the policy: trained on


class EndReason(str, Enum):
    DONE = "done"  # the environment ended it
    MAX_TURNS = "max_turns"  # the last allowed model turn was taken
    MAX_TOKENS = "max_tokens"  # no room left in the token budget for the next turn
    TRUNCATED = "truncated"  # a turn hit its own token limit before its end token
    STEP_TIMEOUT = "step_timeout"  # the environment's step ran past its timeout


@dataclass(frozen=True)
class Segment:
    """A run of response tokens from one source; model segments carry one log-prob a token."""

    source: Source
    ids: tuple[int, ...]
    log_probs: tuple[float, ...] = ()


@dataclass(frozen=True)
class Turn:
    """One model turn: its decoded text, its token count, and the environment's answer to it
    (None when the step timed out), with the step's wall time; whether it ended by itself."""

    text: str
    tokens: int
    step: StepResult | None
    step_seconds: float = 0.0
    ended: bool = True  # by an end token or a stop string; False: cut at a token limit


@dataclass
class Episode:
    row: Mapping[str, Any]
    messages: list[Message]
    prompt_ids: tuple[int, ...]
    segments: list[Segment] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    end: EndReason | None = None

    @property
    def response_ids(self) -> list[int]:
        """Every token after the first prompt, in order (model and observation)."""
        return [t for s in self.segments for t in s.ids]

    @property
    def sources(self) -> list[Source]:
        return [s.source for s in self.segments for _ in s.ids]

    @property
    def log_probs(self) -> list[float]:
        """The sampler's log-probs on model tokens, 0.0 on observation tokens."""
        out: list[float] = []
        for s in self.segments:
            out += list(s.log_probs) if s.source is Source.MODEL else [0.0] * len(s.ids)
        return out

    def tokens(self, source: Source) -> int:
        return sum(len(s.ids) for s in self.segments if s.source is source)

    @property
    def reward(self) -> float | None:
        """The sum of the rewards the environment gave; None if it gave none (the episode is
        then scored by the config's reward over the conversation)."""
        given = [t.step.reward for t in self.turns if t.step and t.step.reward is not None]
        return sum(given) if given else None
