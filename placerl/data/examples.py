"""Offline training examples as token ids, tokenized once at the start of a run.

An SFT example is ``(prompt, completion)``; a preference pair ``(prompt, chosen, rejected)``.
Prompts carry BOS and responses end with the end token (``data/collate.py`` says how);
responses are already cut to ``data.max_len``. Token ids, not text, are what the
controller deals to data-parallel ranks (``data/balance.py``) and ships to workers: small,
and the lengths that balancing needs are right there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from placerl.data.collate import IGNORE_INDEX, encode_demonstrations, encode_pairs, right_pad


@dataclass(frozen=True)
class SFTExample:
    """One demonstration: the loss is on ``completion`` only."""

    prompt: list[int]
    completion: list[int]
    truncated: bool = False  # the completion was cut to fit data.max_len
    uncut: int = 0  # prompt + completion tokens before any cut (0: as kept)

    @property
    def tokens(self) -> int:
        return len(self.prompt) + len(self.completion)

    @property
    def full_length(self) -> int:
        """Tokens of the row as the data has it, before ``data.max_len`` cut it."""
        return self.uncut or self.tokens


@dataclass(frozen=True)
class EncodedPair:
    """One preference example as token ids (prompt with BOS, responses with EOS, cut to fit)."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    truncated: bool = False  # a response was cut to fit data.max_len
    uncut: int = 0  # prompt + longer response tokens before any cut (0: as kept)

    @property
    def full_length(self) -> int:
        """Tokens of prompt + longer response as the data has them, before any cut."""
        return self.uncut or len(self.prompt) + max(len(self.chosen), len(self.rejected))


def cut_to_fit(prompt: list[int], response: list[int], max_len: int) -> list[int]:
    """The response cut so that prompt + response fits ``max_len`` tokens."""
    return response[: max_len - len(prompt)]


def encode_sft(
    tokenizer, pairs: Sequence[tuple[str, str]], max_len: int, rows: Sequence[int] | None = None
) -> list[SFTExample]:
    """Demonstrations as token ids, completions cut to fit ``max_len`` (as ``sft_batch``)."""
    prompts, completions = encode_demonstrations(tokenizer, pairs, max_len, rows)
    examples = []
    for prompt, completion in zip(prompts, completions, strict=True):
        kept = cut_to_fit(prompt, completion, max_len)
        cut, uncut = len(kept) < len(completion), len(prompt) + len(completion)
        examples.append(SFTExample(prompt, kept, truncated=cut, uncut=uncut))
    return examples


def encode_comparisons(
    tokenizer, triples: Sequence[tuple[str, str, str]], max_len: int
) -> list[EncodedPair]:
    """Reward-model comparisons as pairs, responses cut to fit (as ``preference_batch``
    cuts them); a prompt with no room for a response is a ``UserError`` naming its row."""
    prompts, chosen, rejected = encode_pairs(tokenizer, triples, max_len)
    pairs = []
    for prompt, good, bad in zip(prompts, chosen, rejected, strict=True):
        kept = cut_to_fit(prompt, good, max_len), cut_to_fit(prompt, bad, max_len)
        cut = len(kept[0]) < len(good) or len(kept[1]) < len(bad)
        uncut = len(prompt) + max(len(good), len(bad))
        pairs.append(EncodedPair(prompt, kept[0], kept[1], truncated=cut, uncut=uncut))
    return pairs


def sft_rows(examples: Sequence[SFTExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``[prompt | completion]`` rows, one per example: ``input_ids``,
    ``attention_mask`` and ``labels`` (-100 on prompt and padding), as ``sft_batch`` makes."""
    input_ids, mask = right_pad([e.prompt + e.completion for e in examples], pad_id)
    labels, _ = right_pad(
        [[IGNORE_INDEX] * len(e.prompt) + e.completion for e in examples], IGNORE_INDEX
    )
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def pair_rows(pairs: Sequence[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Rows [0, B) ``[prompt | chosen]`` and [B, 2B) ``[prompt | rejected]``, right-padded,
    as ``preference_batch`` makes them: one forward scores both sides."""
    sequences = [p.prompt + p.chosen for p in pairs] + [p.prompt + p.rejected for p in pairs]
    input_ids, mask = right_pad(sequences, pad_id)
    return {"input_ids": input_ids, "attention_mask": mask}
