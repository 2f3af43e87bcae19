"""The reward: one score per response, from a Python rule or a learned reward model.

A rule reward is any function named ``module:function`` with this signature::

    def reward(completions: list[str], prompts: list[str], **columns) -> list[float]

``completions`` are the decoded responses (special tokens removed), ``prompts`` the prompt
texts, and ``columns`` every other column of the prompt dataset as lists aligned with the
completions (e.g. ``answer``). It returns one finite number per completion. Anything else — an
exception, a wrong length, a non-number — is the user's to fix and is reported as such.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence

import torch

from placerl.errors import UserError
from placerl.roles.common import autocast, position_ids
from placerl.types import Batch, Field

RewardFn = Callable[..., Sequence[float]]


def import_reward_function(spec: str) -> RewardFn:
    """Resolve ``module:function`` (the module must be importable, e.g. on PYTHONPATH)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"expected 'module:function', got {spec!r}", where="reward.function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(f"cannot import module {module_name!r}: {err}", "reward.function") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UserError(f"{module_name!r} has no function {attr!r}", where="reward.function")
    return fn


def decode_responses(tokenizer, batch: Batch) -> list[str]:
    ids = batch[Field.RESPONSE_IDS].masked_fill(
        batch[Field.RESPONSE_MASK] == 0, tokenizer.pad_token_id
    )
    return tokenizer.batch_decode(ids.tolist(), skip_special_tokens=True)


class RuleReward:
    def __init__(self, fn: RewardFn, tokenizer, name: str, scale: float = 1.0):
        self.fn, self.tokenizer, self.name, self.scale = fn, tokenizer, name, scale

    def score(self, batch: Batch, prompts: list[str], columns: dict[str, list]) -> torch.Tensor:
        completions = decode_responses(self.tokenizer, batch)
        try:
            scores = self.fn(completions=completions, prompts=prompts, **columns)
        except Exception as err:  # the user's code: report it as theirs, with its type
            raise UserError(
                f"reward function raised {type(err).__name__}: {err}", where=self.name
            ) from err
        return self.scale * check_scores(scores, len(completions), self.name)


def check_scores(scores, expected: int, name: str) -> torch.Tensor:
    """The scores as a (B,) float tensor, or a UserError saying what came back instead."""
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().flatten().tolist()
    if not isinstance(scores, (list, tuple)):
        raise UserError(
            f"reward function must return a list of floats, got {type(scores).__name__}", name
        )
    if len(scores) != expected:
        raise UserError(
            f"reward function returned {len(scores)} scores for {expected} completions", name
        )
    for i, s in enumerate(scores):
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
            raise UserError(
                f"reward function returned {s!r} at index {i}; expected a finite float", name
            )
    return torch.tensor(scores, dtype=torch.float32)


class ModelReward:
    """A reward model with a scalar head, read at each sequence's last real token."""

    def __init__(self, model, *, precision: str = "fp32", scale: float = 1.0):
        self.model = model.eval().requires_grad_(False)
        self.precision, self.scale = precision, scale

    @torch.no_grad()
    def score(self, batch: Batch, prompts: list[str], columns: dict[str, list]) -> torch.Tensor:
        mask = batch[Field.ATTENTION_MASK]
        with autocast(self.precision):
            out = self.model(
                input_ids=batch[Field.INPUT_IDS],
                attention_mask=mask,
                position_ids=position_ids(mask),
            )
        return self.scale * out.logits[:, 0].float()
