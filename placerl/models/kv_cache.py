"""The keyword a model's ``forward`` takes its KV cache by: ``past_key_values`` up to
transformers 5.23, ``cache`` from 5.24 (the old name warns, and goes in 5.40).

placerl passes a ``DynamicCache`` in sampling and in shared-prompt training forwards, and the
``transformers>=4.56`` range spans both names, so the name is read from the signature."""

from __future__ import annotations

import functools
import inspect

from torch import nn


def cache_kwargs(model: nn.Module, cache) -> dict:
    """``{name: cache}`` for ``model(**inputs, **cache_kwargs(model, cache))``."""
    base = getattr(model, "get_base_model", None)  # a peft model: the wrapped model's name
    return {_cache_name(type(base() if base is not None else model)): cache}


@functools.cache
def _cache_name(cls: type) -> str:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"
