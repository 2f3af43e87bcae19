"""Padding-free batches for scoring responses: several sequences per row, each kept apart.

A *group* is one prompt with the responses to score after it (a preference pair: chosen and
rejected). Three layouts, from least to most compute:

- ``shared``: each group is laid out once as ``[prompt | response 1 | response 2 …]``, and an
  explicit attention mask lets every response see the prompt and itself (causally) but not
  the other responses; positions restart at len(prompt) for each response. The prompt is
  computed once instead of once per response.
- ``packed``: ``[prompt | response]`` sequences end to end, positions restarting at 0 at each;
  no mask is passed, and transformers (``attention_mask=None``, ``use_cache=False``) reads the
  restarts as packed sequences and keeps them apart.
- ``padded``: one ``[prompt | response]`` per row, right-padded; plain causal attention.

Rows are as wide as the longest item (a group for ``shared``, a sequence otherwise) and filled
first-fit decreasing, so little is left for padding. Whether a model honours a layout is for
the caller to check (``placerl.algos.dpo.choose_layout``): a model that ignores the mask or the
restarts would silently let sequences attend to each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

LAYOUTS = ("shared", "packed", "padded")
Group = tuple[list[int], Sequence[list[int]]]  # (prompt ids, response ids of each response)


@dataclass
class Packed:
    """S scored sequences (numbered response-major, see ``_items``) in N rows of W tokens."""

    input_ids: Tensor  # (N, W) int64, rows right-padded
    position_ids: Tensor  # (N, W) int64
    attention_mask: Tensor | None  # (N, W, W) bool: query i may attend key j; None: causal
    sources: Tensor  # (T,) int64, flat index into (N·W) of the logits predicting each target
    targets: Tensor  # (T,) int64, the response tokens, T in all
    owners: Tensor  # (T,) int64, the sequence (0..S-1) each target belongs to
    lengths: Tensor  # (S,) float32, response tokens per sequence
    num_tokens: int  # real (non-pad) tokens in the rows

    @property
    def num_sequences(self) -> int:
        return self.lengths.numel()


@dataclass
class _Builder:
    input_ids: Tensor
    position_ids: Tensor
    mask: Tensor | None
    sources: list[Tensor] = field(default_factory=list)
    targets: list[Tensor] = field(default_factory=list)
    owners: list[Tensor] = field(default_factory=list)

    def write(self, row: int, start: int, ids: list[int], first_position: int) -> None:
        n = len(ids)
        self.input_ids[row, start : start + n] = torch.tensor(ids, dtype=torch.long)
        self.position_ids[row, start : start + n] = torch.arange(first_position, first_position + n)

    def attend(self, row: int, queries: slice, keys: slice, causal: bool) -> None:
        if self.mask is None:
            return
        n, m = queries.stop - queries.start, keys.stop - keys.start
        block = torch.ones(n, m, dtype=torch.bool)
        self.mask[row, queries, keys] = block.tril() if causal else block


def _items(groups: Sequence[Group], layout: str) -> list[tuple[list[int], list[tuple]]]:
    """(prompt, [(sequence index, response), …]) per item: a whole group when prompts are
    shared, else one item per response. Sequences are numbered response-major: every group's
    first response, then every second response, … (for pairs: all chosen, then all rejected)."""
    scored: list[list[tuple[int, list[int]]]] = [[] for _ in groups]
    index = 0
    for j in range(max(len(responses) for _, responses in groups)):
        for g, (_, responses) in enumerate(groups):
            if j < len(responses):
                scored[g].append((index, responses[j]))
                index += 1
    items = []
    for (prompt, _), mine in zip(groups, scored):
        items += [(prompt, mine)] if layout == "shared" else [(prompt, [s]) for s in mine]
    return items


def _rows(lengths: Sequence[int], width: int, share_rows: bool) -> list[list[int]]:
    """Which items share a row: first-fit decreasing into rows of ``width`` tokens."""
    if not share_rows:
        return [[i] for i in range(len(lengths))]
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if row is None:
            rows.append([])
            room.append(width)
            row = len(rows) - 1
        rows[row].append(i)
        room[row] -= lengths[i]
    return rows


def _place(out: _Builder, row: int, start: int, width: int, item) -> int:
    """Write one item at ``start`` of ``row``; returns where the next item starts."""
    prompt, scored = item
    p = len(prompt)
    out.write(row, start, prompt, 0)
    out.attend(row, slice(start, start + p), slice(start, start + p), causal=True)
    cursor = start + p
    for sequence, response in scored:
        n = len(response)
        out.write(row, cursor, response, p)
        span = slice(cursor, cursor + n)
        out.attend(row, span, slice(start, start + p), causal=False)  # sees the prompt…
        out.attend(row, span, span, causal=True)  # …and itself, not the other responses
        base = row * width
        # the first token is predicted at the prompt's last position, the rest in the response
        out.sources.append(
            torch.cat([torch.tensor([base + start + p - 1]), torch.arange(n - 1) + base + cursor])
        )
        out.targets.append(torch.tensor(response, dtype=torch.long))
        out.owners.append(torch.full((n,), sequence, dtype=torch.long))
        cursor += n
    return cursor


def pack(groups: Sequence[Group], pad_id: int, layout: str = "shared") -> Packed:
    """Lay out ``groups`` in ``layout`` (see the module docstring)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    items = _items(groups, layout)
    lengths = [len(prompt) + sum(len(r) for _, r in scored) for prompt, scored in items]
    width = max(lengths)
    rows = _rows(lengths, width, share_rows=layout != "padded")
    shape = (len(rows), width)
    out = _Builder(
        input_ids=torch.full(shape, pad_id, dtype=torch.long),
        position_ids=torch.zeros(shape, dtype=torch.long),
        mask=torch.zeros((*shape, width), dtype=torch.bool) if layout == "shared" else None,
    )
    for row, members in enumerate(rows):
        end = 0
        for i in members:
            end = _place(out, row, end, width, items[i])
        # padding: positions restart (its own segment when packed; after the sequence when
        # padded they would look like a continuation, so there they run on) and, with a mask,
        # each pad token sees itself only (a query that sees nothing would give NaN)
        first = end if layout == "padded" else 0
        out.position_ids[row, end:] = torch.arange(first, first + width - end)
        if out.mask is not None:
            out.mask[row, range(end, width), range(end, width)] = True
    owners = torch.cat(out.owners)
    return Packed(
        input_ids=out.input_ids,
        position_ids=out.position_ids,
        attention_mask=out.mask,
        sources=torch.cat(out.sources),
        targets=torch.cat(out.targets),
        owners=owners,
        lengths=torch.bincount(owners, minlength=sum(len(r) for _, r in groups)).float(),
        num_tokens=sum(lengths),
    )
