"""KV caches: the keyword a model's ``forward`` takes one by, and rows of a batched
``DynamicCache`` taken out and put back (multi-turn continuation).

The keyword is ``past_key_values`` up to transformers 5.23, ``cache`` from 5.24 (the old name
warns, and goes in 5.40).

placerl passes a ``DynamicCache`` in sampling and in shared-prompt training forwards, and the
``transformers>=4.56`` range spans both names, so the name is read from the signature."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


def cache_kwargs(model: nn.Module, cache) -> dict:
    """``{name: cache}`` for ``model(**inputs, **cache_kwargs(model, cache))``."""
    base = getattr(model, "get_base_model", None)  # a peft model: the wrapped model's name
    return {_cache_name(type(base() if base is not None else model)): cache}


@functools.cache
def _cache_name(cls: type) -> str:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


# --------------------------------------------------------------- rows taken out and put back
#
# Multi-turn sampling keeps each sequence's keys and values between turns, while its tools
# run, and continues it later in whatever batch it then joins (rollout/continuation.py). A
# batched ``DynamicCache`` holds left padding and the holes of padded chunks; a row taken out
# keeps only its real positions (rotary positions are already inside the keys, so dropping
# masked slots changes nothing the attention sees), and rows put back are left-padded again.


@dataclass(frozen=True)
class RowCache:
    """One sequence's keys and values over its real tokens only: per layer (H, n, D)."""

    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]

    @property
    def length(self) -> int:
        return int(self.keys[0].shape[-2])


def rows_reusable(cache: DynamicCache) -> bool:
    """Whether rows can be taken out of ``cache`` and put back: every layer keeps all its
    positions (a sliding-window layer drops old ones, so its rows cannot be compacted)."""
    return all(type(layer) is DynamicLayer for layer in cache.layers)


def take_rows(cache: DynamicCache, local: Tensor, mask: Tensor) -> list[RowCache]:
    """Rows ``local`` (k,) of ``cache``, each cut to the positions ``mask`` (A, L) marks real;
    L is the cache's current length."""
    out = []
    for row in local.tolist():
        index = mask[row].nonzero().squeeze(-1)
        keys = tuple(layer.keys[row].index_select(-2, index) for layer in cache.layers)
        values = tuple(layer.values[row].index_select(-2, index) for layer in cache.layers)
        out.append(RowCache(keys, values))
    return out


def stack_rows(
    rows: Sequence[RowCache | None], config, mask_dtype=torch.long
) -> tuple[DynamicCache, Tensor]:
    """A batched cache of ``rows`` left-padded to the longest, and its (B, L) mask; a None row
    (a sequence not started yet) is all padding. At least one row must be a ``RowCache``."""
    present = [r for r in rows if r is not None]
    width = max(r.length for r in present)
    first = present[0]
    device = first.keys[0].device
    mask = torch.zeros((len(rows), width), dtype=mask_dtype, device=device)
    for b, r in enumerate(rows):
        if r is not None and r.length:
            mask[b, width - r.length :] = 1
    cache = DynamicCache(config=config)
    for layer in range(len(first.keys)):
        heads, _, dim = first.keys[layer].shape
        keys = first.keys[layer].new_zeros((len(rows), heads, width, dim))
        values = first.values[layer].new_zeros(
            (len(rows), heads, width, first.values[layer].shape[-1])
        )
        for b, r in enumerate(rows):
            if r is not None and r.length:
                keys[b, :, width - r.length :] = r.keys[layer]
                values[b, :, width - r.length :] = r.values[layer]
        cache.update(keys, values, layer)
    return cache, mask
