"""The reward: one score per response, from a Python rule or a learned reward model.

A rule reward is any function named ``module:function`` with this signature::

    def reward(completions: list[str], prompts: list, **columns) -> list[float]

``completions`` are the decoded responses (special tokens removed), ``prompts`` the prompts as
the dataset gave them, like TRL: the string for plain data, the list of ``{"role",
"content"}`` messages for chat data (not the text the chat template rendered), and
``columns`` every other column of the prompt dataset as lists aligned with the completions
(e.g. ``answer``). It returns one finite number per completion. Anything else — an
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

    def score(self, batch: Batch, prompts: list, columns: dict[str, list]) -> torch.Tensor:
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


def last_attended(mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of each row's last position with ``mask`` 1 (rows of any padding side)."""
    positions = torch.arange(mask.shape[-1], device=mask.device)
    return (positions * (mask != 0)).argmax(dim=-1)


def sequence_scores(model, input_ids, attention_mask, position_ids=None) -> torch.Tensor:
    """(B,) float scores of a one-label sequence-classification model, each read at its row's
    last attended token: the last response token, i.e. its end token when it has one.

    One definition for RM training, PPO scoring and evaluation. Hugging Face's heads pick the
    last token that is not ``pad_token_id`` instead, which moves with the pad choice (pad = an
    end token makes it skip the end token) and refuses batches when the config has no pad id;
    so the per-position scores are taken from the head as it runs (a forward hook, which keeps
    the model's own ``forward`` and so any wrapper around it) and indexed from the mask.
    """
    head = getattr(model, "score", None) or getattr(model, "classifier", None)
    if head is None:
        raise TypeError(f"{type(model).__name__} has no 'score' head to read scores from")
    captured: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda _m, _i, out: captured.append(out))
    config = model.config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    had_pad = config.pad_token_id is not None
    if not had_pad:  # only to pass HF's batch check; its pooled output is not used
        config.pad_token_id = -1
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    finally:
        handle.remove()
        if not had_pad:
            config.pad_token_id = None
    per_token = captured[-1]  # (B, T, 1); a pooling head (BERT-like) gives (B, 1) itself
    if per_token.dim() == 2:
        return per_token[:, 0].float()
    rows = torch.arange(per_token.shape[0], device=per_token.device)
    return per_token[rows, last_attended(attention_mask).to(per_token.device), 0].float()


class ModelReward:
    """A reward model with a scalar head, read at each sequence's last attended token (the
    response's last token: its end token when it stopped, ``sequence_scores``)."""

    def __init__(self, model, *, precision: str = "fp32", scale: float = 1.0):
        self.model = model.eval().requires_grad_(False)
        self.precision, self.scale = precision, scale

    @torch.no_grad()
    def score(self, batch: Batch, prompts: list, columns: dict[str, list]) -> torch.Tensor:
        mask = batch[Field.ATTENTION_MASK]
        with autocast(self.precision):
            scores = sequence_scores(
                self.model, batch[Field.INPUT_IDS], mask, position_ids=position_ids(mask)
            )
        return self.scale * scores
