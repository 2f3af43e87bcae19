"""Micro-batches: one optimizer step's minibatch cut into forwards that fit in memory.

Memory of a training forward grows with the rows and tokens it holds, so a minibatch runs as
several forward/backward passes whose gradients accumulate before the one optimizer step.
The gradient is the minibatch's, not a mean of micro-batch means: a micro-batch's loss, which
the objective normalises by its own count (valid tokens for token-mean, sequences for the
seq-mean modes, rows of a grouped objective), is weighted by

    w_m = count(micro-batch m) / count(minibatch),

so Σ_m w_m ∇L_m = ∇L of one big forward (torchtitan's train_step counts the valid tokens of
all micro-batches first for the same reason). The data-parallel runtime already weights rank
shares this way (runtime/ray/data_parallel.py); it cuts each micro-batch into rank shares, so
the two compose, and every rank runs the same number of micro-batches (all cut the same
minibatch the same way) as FSDP needs.

How rows are cut (after verl's ``rearrange_micro_batches``, without its balancing): rows of
one prompt stay together, so the shared-prompt forward still computes each prompt once; a
micro-batch takes whole groups while it holds at most ``rows`` sequences and ``tokens`` real
tokens; a group larger than that is cut into pieces that fit (each still shares its prompt);
a single sequence over the token budget goes alone. Grouped batches ([G, n]: preference pairs,
BRAIn's samples of one prompt) are cut between groups only, since their loss couples a
group's rows. Padding columns no row of a micro-batch uses are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from placerl.models.shared_prefix import distinct_prompts
from placerl.types import Batch, Field

GROUP_MEAN = "group-mean"  # a grouped objective's loss: a mean over its groups (rows)
_PROMPT_FIELDS = (Field.PROMPT_IDS, Field.PROMPT_MASK)
_SEQUENCE_FIELDS = (Field.INPUT_IDS, Field.ATTENTION_MASK)


@dataclass(frozen=True)
class MicroBatching:
    """Limits of one forward: ``rows`` sequences and ``tokens`` real tokens (None: no limit).
    Both None: the minibatch is one forward (the default)."""

    rows: int | None = None
    tokens: int | None = None

    @property
    def active(self) -> bool:
        return self.rows is not None or self.tokens is not None

    def scaled(self, workers: int) -> MicroBatching:
        """The limits of a micro-batch that ``workers`` data-parallel ranks share."""
        return MicroBatching(
            self.rows * workers if self.rows else None,
            self.tokens * workers if self.tokens else None,
        )


def micro_batching(cfg) -> MicroBatching:
    """The limits a run's ``trainer`` section sets (``trainer.micro_batch_size``,
    ``trainer.max_tokens_per_micro_batch``)."""
    return MicroBatching(cfg.trainer.micro_batch_size, cfg.trainer.max_tokens_per_micro_batch)


def loss_denominator(mask: Tensor, loss_agg: str) -> float:
    """What a loss aggregated with ``loss_agg`` divides by: valid tokens (token-mean),
    sequences with a valid token (seq-mean modes), or rows (a grouped objective)."""
    if loss_agg == GROUP_MEAN:
        return float(mask.shape[0])
    valid = mask.bool()
    if loss_agg == "token-mean":
        return float(valid.sum())
    return float(valid.any(dim=-1).sum())


def micro_batches(mb: Batch, spec: MicroBatching) -> list[Tensor]:
    """Index sets (into ``mb``'s first dimension) of its micro-batches, in order."""
    size = mb.batch_size[0]
    if not spec.active or size == 0:
        return [torch.arange(size)]
    tokens = mb[Field.ATTENTION_MASK].flatten(1).sum(-1).tolist()  # (B,) real tokens per row
    if mb.batch_dims == 1:
        parts = pack_units(_units(mb), tokens, 1, spec, splittable=True)
    else:  # a grouped [G, n] batch: a row is a group of n sequences, never cut
        units = [[i] for i in range(size)]
        parts = pack_units(units, tokens, int(mb.batch_size[1]), spec, splittable=False)
    return [torch.tensor(part, dtype=torch.long) for part in parts]


def pack_units(
    units: list[list[int]],
    tokens: list[int],
    width: int,
    spec: MicroBatching,
    splittable: bool = True,
) -> list[list[int]]:
    """Greedy micro-batches of whole ``units`` (lists of item indices) in order, each within
    ``spec``'s limits where it can be: an item is ``width`` sequences of ``tokens[i]`` real
    tokens. A unit over the limits is cut into pieces that fit when ``splittable`` (one item
    over them goes alone); the others start a micro-batch of their own."""
    if not spec.active:
        return [[i for unit in units for i in unit]]
    max_rows = spec.rows or float("inf")
    max_tokens = spec.tokens or float("inf")

    def fits(rows: int, used: float) -> bool:
        return rows * width <= max_rows and used <= max_tokens

    pieces: list[list[int]] = []
    for unit in units:
        piece: list[int] = []
        for i in unit:
            used = sum(tokens[j] for j in piece) + tokens[i]
            if splittable and piece and not fits(len(piece) + 1, used):
                pieces.append(piece)
                piece = []
            piece.append(i)
        pieces.append(piece)
    out: list[list[int]] = []
    rows, used = 0, 0.0
    for piece in pieces:
        piece_tokens = sum(tokens[i] for i in piece)
        if out and fits(rows + len(piece), used + piece_tokens):
            out[-1].extend(piece)
            rows, used = rows + len(piece), used + piece_tokens
        else:
            out.append(list(piece))
            rows, used = len(piece), piece_tokens
    return out


def _units(mb: Batch) -> list[list[int]]:
    """Rows grouped by prompt (groups in the order they first appear), or one row each."""
    if Field.PROMPT_IDS not in mb.keys():  # noqa: SIM118 (TensorDict has no `in`)
        return [[i] for i in range(mb.batch_size[0])]
    plan = distinct_prompts(mb[Field.PROMPT_IDS], mb[Field.PROMPT_MASK])
    if plan is None:
        return [[i] for i in range(mb.batch_size[0])]
    first, inverse = plan
    groups: dict[int, list[int]] = {}
    for row, owner in enumerate(first[inverse].tolist()):
        groups.setdefault(owner, []).append(row)
    return [groups[k] for k in sorted(groups)]


def trim_padding(mb: Batch) -> Batch:
    """``mb`` without the prompt columns no row uses (left padding) and the response columns
    no row uses (right padding); a 1-D batch of the [prompt | response] layout, else as is."""
    keys = set(mb.keys())
    if mb.batch_dims != 1 or not {*_PROMPT_FIELDS, *_SEQUENCE_FIELDS, Field.RESPONSE_MASK} <= keys:
        return mb
    prompt_mask, attention = mb[Field.PROMPT_MASK], mb[Field.ATTENTION_MASK]
    width, response_width = prompt_mask.shape[1], mb[Field.RESPONSE_MASK].shape[1]
    used = prompt_mask.bool().any(0).nonzero()
    start = int(used[0]) if used.numel() else width
    response_used = (attention[:, width:].bool() | mb[Field.RESPONSE_MASK].bool()).any(0)
    last = response_used.nonzero()
    stop = int(last[-1]) + 1 if last.numel() else 1  # keep one column: shapes stay (B, ≥1)
    if start == 0 and stop == response_width:
        return mb
    out = mb.clone(recurse=False)
    for key in keys:
        value = mb[key]
        if key in _PROMPT_FIELDS:
            out[key] = value[:, start:]
        elif key in _SEQUENCE_FIELDS:
            out[key] = value[:, start : width + stop]
        elif value.dim() >= 2 and value.shape[1] == response_width:
            out[key] = value[:, :stop]
    return out


def stat_weights(micro: Batch, mb: Batch, loss_agg: str) -> tuple[float, float]:
    """(loss weight, stat weight) of a micro-batch in its minibatch: its share of the loss
    denominator, and its share of the valid response tokens (rows, for a grouped objective)
    that weighs the per-token means an objective reports."""
    mask, part = mb[Field.RESPONSE_MASK], micro[Field.RESPONSE_MASK]
    loss_share = loss_denominator(part, loss_agg) / max(loss_denominator(mask, loss_agg), 1.0)
    if loss_agg == GROUP_MEAN:
        return loss_share, loss_share
    return loss_share, float(part.sum()) / max(float(mask.sum()), 1.0)
