"""Splitting a batch over data-parallel workers (dim 0) and gathering the parts back.

The controller splits, the workers compute, the controller gathers: the algorithm never sees
the parts. Rows are cut into contiguous, near-equal shards (rank r gets rows
``[r·B/W, (r+1)·B/W)``), the same cut every worker uses for its share of a training minibatch.

Gathering sampled batches needs care: each worker trims its responses to its own longest row,
so parts come back with different response widths R_w. They are right-padded to the widest
(pad id for token ids, 0 for masks and log-probs), which is exactly what one process sampling
the whole batch returns, since it also pads every row to the longest.

Nothing here imports Ray: it is plain tensor bookkeeping, tested on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tensordict import TensorDict
from torch import Tensor

from placerl.types import Batch, Field

TOKEN_FIELDS = (Field.RESPONSE_IDS, Field.INPUT_IDS, Field.PROMPT_IDS)  # padded with the pad id


def shard_slices(size: int, parts: int) -> list[slice]:
    """``parts`` contiguous slices of ``range(size)`` whose lengths differ by at most one."""
    return [slice(r * size // parts, (r + 1) * size // parts) for r in range(parts)]


def shard_rows(size: int, parts: int) -> list[Tensor]:
    """Row indices of each part; when there are fewer rows than parts, the empty parts get
    row 0 again (a worker must still take part in collectives) and ``owned_rows`` drops it."""
    rows = [torch.arange(s.start, s.stop) for s in shard_slices(size, parts)]
    return [r if r.numel() else torch.zeros(1, dtype=torch.long) for r in rows]


def owned_rows(size: int, parts: int) -> list[int]:
    """How many leading rows of each part's result are real (0 for a padding part)."""
    return [s.stop - s.start for s in shard_slices(size, parts)]


def take_rows(value: Any, rows: Tensor) -> Any:
    """``value`` restricted to ``rows``: tensors and TensorDicts by index, lists by position,
    dicts of lists (dataset columns) column by column; anything else as is."""
    if isinstance(value, (Tensor, TensorDict)):
        return value[rows]
    if isinstance(value, list):
        return [value[i] for i in rows.tolist()]
    if isinstance(value, dict):
        return {k: take_rows(v, rows) for k, v in value.items()}
    return value


def cat_results(parts: Sequence[Any], owned: Sequence[int], pad_token_id: int = 0) -> Any:
    """Concatenate per-worker results along dim 0, keeping each part's ``owned`` rows:
    tensors (right-padding dim 1 when widths differ) and TensorDicts (see ``gather_batches``)."""
    kept = [_head(p, n) for p, n in zip(parts, owned, strict=True) if n > 0]
    first = kept[0]
    if isinstance(first, TensorDict):
        return gather_batches(kept, pad_token_id)
    if isinstance(first, Tensor):
        return torch.cat(_pad_widths(kept, 0), dim=0)
    raise TypeError(f"cannot gather results of type {type(first).__name__}")


def _head(value: Any, n: int) -> Any:
    return value[:n] if value.shape[0] != n else value


def gather_batches(parts: Sequence[Batch], pad_token_id: int) -> Batch:
    """One batch from per-worker batches; fields wider in one part are right-padded in the
    others (token ids with ``pad_token_id``, everything else with 0)."""
    keys = list(parts[0].keys())
    fields = {}
    for key in keys:
        pad = pad_token_id if key in TOKEN_FIELDS else 0
        fields[key] = torch.cat(_pad_widths([p[key] for p in parts], pad), dim=0)
    return TensorDict(fields, batch_size=[sum(p.batch_size[0] for p in parts)])


def _pad_widths(tensors: Sequence[Tensor], value: float) -> list[Tensor]:
    """Right-pad dim 1 of 2-D+ tensors to the widest; 1-D tensors are returned unchanged."""
    if tensors[0].dim() < 2:
        return list(tensors)
    width = max(t.shape[1] for t in tensors)
    out = []
    for t in tensors:
        if t.shape[1] < width:
            filler = t.new_full((t.shape[0], width - t.shape[1], *t.shape[2:]), value)
            t = torch.cat([t, filler], dim=1)
        out.append(t)
    return out
