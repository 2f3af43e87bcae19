"""Tokenization and padding: text in, padded int64 tensors out.

Prompt and response are tokenized separately and concatenated, so the boundary between them
is exact (a joint tokenization could merge across it and blur which tokens are trained on).
No special tokens are added by the tokenizer; BOS is prepended here when asked and when the
tokenizer has one (and the text does not already start with it, as chat templates often
write it), and every response ends with exactly one end token so the model learns to stop
where sampling stops: a chat template's turn end (``…<|im_end|>``, the whitespace the
template writes after it dropped) or, for plain text, the tokenizer's EOS appended
(``models/tokens.py::target_end`` states the rule).

Prompts are never truncated silently: a prompt too long for ``max_len`` is a ``UserError``
naming its row. A response that does not fit is cut, and the batch reports how many were.
Layouts: prompts alone are LEFT-padded (generation appends on the right); training sequences
``[prompt | response]`` are RIGHT-padded, with masks aligned to ``input_ids``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from placerl.errors import UserError
from placerl.models.tokens import target_end

IGNORE_INDEX = -100  # label of tokens that do not count in the loss (HF convention)
PROMPT_KEY = "data.max_prompt_len"  # the limit of prompts alone (RL, held-out prompts)
EXAMPLE_KEY = "data.max_len"  # the limit of prompt + response (SFT, RM, DPO examples)


def encode_prompts(
    tokenizer,
    prompts: Sequence[str],
    max_len: int,
    add_bos: bool = True,
    rows: Sequence[int] | None = None,
) -> list[list[int]]:
    """Token ids of each prompt; ``rows`` are the dataset indices used in error messages."""
    encoded = [_with_bos(ids, tokenizer, add_bos) for ids in _encode(tokenizer, prompts)]
    lengths = [len(ids) for ids in encoded]
    for index, length in enumerate(lengths):
        if length > max_len:
            raise _too_long(lengths, index, max_len, _name(rows, index), PROMPT_KEY, room=0)
    return encoded


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask), both (B, P) int64, real tokens flush right: the layout for generation."""
    width = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return ids, mask


def right_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask), both (B, T) int64, real tokens flush left: the layout for training."""
    width = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        if seq:
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
    return ids, mask


def sft_batch(
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    max_len: int,
    eos: bool = True,
    add_bos: bool = True,
    rows: Sequence[int] | None = None,
) -> dict[str, torch.Tensor | int]:
    """Right-padded ``[prompt | completion]`` with ``labels`` = -100 on prompt and padding.

    Returns ``input_ids``, ``attention_mask``, ``labels`` (B, T) int64, aligned with each
    other (the model shifts labels itself), and ``num_truncated``: completions cut short."""
    prompts, (completions,) = _encode_examples(
        tokenizer, [p for p, _ in pairs], [[c for _, c in pairs]], max_len, eos, add_bos, rows
    )
    sequences, labels, truncated = [], [], 0
    for prompt, completion in zip(prompts, completions, strict=True):
        kept = completion[: max_len - len(prompt)]
        truncated += len(kept) < len(completion)
        sequences.append(prompt + kept)
        labels.append([IGNORE_INDEX] * len(prompt) + kept)
    input_ids, attention_mask = right_pad(sequences, pad_token_id(tokenizer))
    label_ids, _ = right_pad(labels, IGNORE_INDEX)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": label_ids,
        "num_truncated": truncated,
    }


def preference_batch(
    tokenizer,
    triples: Sequence[tuple[str, str, str]],
    max_len: int,
    eos: bool = True,
    add_bos: bool = True,
    rows: Sequence[int] | None = None,
) -> dict[str, torch.Tensor | int]:
    """Chosen then rejected along the batch: rows [0, B) are ``[prompt | chosen]``, rows
    [B, 2B) ``[prompt | rejected]``, so one forward pass scores both sides.

    Returns ``input_ids``, ``attention_mask``, ``loss_mask`` (2B, T) int64, right-padded;
    ``loss_mask`` is 1 where ``input_ids`` is a response token (shift it by one to line it up
    with next-token log-probs). ``num_truncated``: pairs with either response cut short."""
    responses = [[c for _, c, _ in triples], [r for _, _, r in triples]]
    prompts, (chosen, rejected) = _encode_examples(
        tokenizer, [p for p, _, _ in triples], responses, max_len, eos, add_bos, rows
    )
    sequences, masks = [], []
    cut = [False] * len(prompts)
    for responses in (chosen, rejected):
        for index, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
            kept = response[: max_len - len(prompt)]
            cut[index] |= len(kept) < len(response)
            sequences.append(prompt + kept)
            masks.append([0] * len(prompt) + [1] * len(kept))
    input_ids, attention_mask = right_pad(sequences, pad_token_id(tokenizer))
    loss_mask, _ = right_pad(masks, 0)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "loss_mask": loss_mask,
        "num_truncated": sum(cut),
    }


def encode_pairs(
    tokenizer,
    triples: Sequence[tuple[str, str, str]],
    max_len: int,
    eos: bool = True,
    add_bos: bool = True,
    rows: Sequence[int] | None = None,
) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    """Token ids of (prompts, chosen, rejected), responses NOT cut to ``max_len``: for callers
    that tokenize a dataset once and decide themselves what to do with long pairs. A prompt
    with no room for a response is still a ``UserError``."""
    prompts, (chosen, rejected) = _encode_examples(
        tokenizer,
        [p for p, _, _ in triples],
        [[c for _, c, _ in triples], [r for _, _, r in triples]],
        max_len,
        eos,
        add_bos,
        rows,
    )
    return prompts, chosen, rejected


def encode_demonstrations(
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    max_len: int,
    rows: Sequence[int] | None = None,
) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids of (prompts, completions) as ``sft_batch`` encodes them, completions NOT cut
    to ``max_len`` (``data/examples.py`` cuts them). A prompt with no room for a completion
    is a ``UserError`` naming its row."""
    prompts, (completions,) = _encode_examples(
        tokenizer, [p for p, _ in pairs], [[c for _, c in pairs]], max_len, True, True, rows
    )
    return prompts, completions


def pad_token_id(tokenizer) -> int:
    """The pad id, else EOS, else 0: padded positions are masked out, so any id will do."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0


def _encode_examples(
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[Sequence[str]],
    max_len: int,
    eos: bool,
    add_bos: bool,
    rows: Sequence[int] | None,
) -> tuple[list[list[int]], list[list[list[int]]]]:
    """Tokenize prompts (with BOS) and each list of responses (with EOS). A prompt that leaves
    no room for even one response token is an error: training on it would teach nothing."""
    prompt_ids = [_with_bos(ids, tokenizer, add_bos) for ids in _encode(tokenizer, prompts)]
    lengths = [len(ids) for ids in prompt_ids]
    for index, length in enumerate(lengths):
        if length >= max_len:  # no room for a response token
            raise _too_long(lengths, index, max_len, _name(rows, index), EXAMPLE_KEY, room=1)
    if eos:
        _eos_id(tokenizer)  # a clear error when responses cannot be terminated
        response_ids = [
            [target_end(ids, tokenizer) for ids in _encode(tokenizer, r)] for r in responses
        ]
    else:
        response_ids = [_encode(tokenizer, r) for r in responses]
    return prompt_ids, response_ids


def _encode(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def _with_bos(ids: list[int], tokenizer, add_bos: bool) -> list[int]:
    bos = getattr(tokenizer, "bos_token_id", None)
    if not add_bos or bos is None or (ids and ids[0] == bos):
        return ids
    return [int(bos), *ids]


def _eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise UserError(
            "the tokenizer has no EOS token, so responses cannot be terminated; "
            "give the tokenizer an eos_token or collate with eos=False",
            where="tokenizer",
        )
    return int(tokenizer.eos_token_id)


def _name(rows: Sequence[int] | None, index: int) -> int:
    return rows[index] if rows is not None else index


def _too_long(
    lengths: list[int], index: int, max_len: int, row: int, key: str, room: int
) -> UserError:
    """The first prompt over the limit (``room``: tokens it must leave for a response), with
    how many are and the spread of all of them, so the new limit can be chosen from the data."""
    over = sum(length + room > max_len for length in lengths)
    with_room = " with room for a response" if room else ""
    return UserError(
        f"prompt is {lengths[index]} tokens long, too long for {key.split('.')[-1]}={max_len}"
        f"{with_room}; "
        f"prompts are never truncated: shorten or drop it, or raise {key} ({over} of "
        f"{len(lengths)} prompts are over; {length_percentiles(lengths)})",
        where=f"row {row}",
    )


def length_percentiles(lengths: Sequence[int]) -> str:
    """``tokens p50 12, p90 30, p99 61, max 70``: the spread of a data set's lengths."""
    ordered = sorted(lengths)
    if not ordered:
        return "no rows"
    at = [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.5, 0.9, 0.99)]
    return f"tokens p50 {at[0]}, p90 {at[1]}, p99 {at[2]}, max {ordered[-1]}"
