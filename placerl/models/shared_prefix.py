"""One forward pass over a prompt shared by several responses (GRPO/RLOO groups, PPO's n > 1).

A group of G samples repeats its prompt G times, and a plain forward/backward pays for the
prompt's tokens G times. Here the distinct prompts run once, their key/value cache is
gathered to every row (``index_select``: differentiable, so the backward pass sums the G
rows' gradients into the one prompt computation), and only the response tokens run per row.
The logits are those of the plain pass up to floating-point summation order. It pays when
prompts are a real share of the tokens and repeat; ``shared_prefix_plan`` says when.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import DynamicCache

from placerl.models.kv_cache import cache_kwargs
from placerl.types import Batch, Field


def position_ids(attention_mask: Tensor) -> Tensor:
    """Positions that ignore left padding: the first real token is position 0."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def shared_prefix_plan(batch: Batch) -> tuple[Tensor, Tensor] | None:
    """(first row of each distinct prompt (U,), row → distinct prompt (B,)), or None when no
    prompt repeats (then the plain pass is as cheap)."""
    return distinct_prompts(batch[Field.PROMPT_IDS], batch[Field.PROMPT_MASK])


def distinct_prompts(prompt_ids: Tensor, prompt_mask: Tensor) -> tuple[Tensor, Tensor] | None:
    """``shared_prefix_plan`` of left-padded (B, P) prompts (the sampler prefills with it)."""
    key = torch.cat([prompt_ids, prompt_mask.to(prompt_ids.dtype)], dim=1)
    _, inverse = torch.unique(key, dim=0, return_inverse=True)
    size = key.shape[0]
    distinct = int(inverse.max()) + 1 if size else 0
    if distinct == size:
        return None
    first = torch.full((distinct,), size, dtype=torch.long, device=inverse.device)
    rows = torch.arange(size, device=inverse.device)
    first = first.scatter_reduce(0, inverse, rows, reduce="amin")
    return first, inverse


def prefix_saving(batch: Batch, first: Tensor) -> float:
    """Share of the batch's token positions that computing each distinct prompt once saves."""
    rows, prompt_width = batch[Field.PROMPT_IDS].shape
    total = rows * batch[Field.INPUT_IDS].shape[1]
    return (rows - first.numel()) * prompt_width / max(total, 1)


def shared_prefix_logits(model, batch: Batch, first: Tensor, inverse: Tensor) -> Tensor:
    """(B, R, V) logits predicting each response token, computing each distinct prompt once."""

    def run(last_only: bool, **inputs) -> Tensor:
        return model(**inputs, logits_to_keep=1 if last_only else 0).logits

    return shared_prefix_outputs(model, run, batch, first, inverse)


def shared_prefix_hidden(decoder, batch: Batch, first: Tensor, inverse: Tensor) -> Tensor:
    """(B, R, H) final hidden states that predict each response token (the LM head's input),
    computing each distinct prompt once: ``shared_prefix_logits`` without the vocabulary."""

    def run(last_only: bool, **inputs) -> Tensor:
        hidden = decoder(**inputs).last_hidden_state
        return hidden[:, -1:] if last_only else hidden

    return shared_prefix_outputs(decoder, run, batch, first, inverse)


def shared_prefix_outputs(module, run, batch: Batch, first: Tensor, inverse: Tensor) -> Tensor:
    """(B, R, D) per-position outputs of ``run`` (logits or hidden states) at the positions
    that predict each response token; ``run(last_only, **inputs)`` does one forward of
    ``module`` (whose ``forward`` signature names the cache keyword)."""
    prompt_ids, prompt_mask = batch[Field.PROMPT_IDS][first], batch[Field.PROMPT_MASK][first]
    width = prompt_ids.shape[1]
    cache = DynamicCache(config=module.config)
    head = run(
        True,
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=position_ids(prompt_mask),
        use_cache=True,
        **cache_kwargs(module, cache),
    )  # (U, 1, D): predicts the first response token
    cache.reorder_cache(inverse)  # (U, …) → (B, …) keys and values, with their gradient path
    responses = batch[Field.RESPONSE_IDS][:, :-1]  # the last token predicts nothing we need
    if responses.shape[1] == 0:
        return head.index_select(0, inverse)
    mask = batch[Field.ATTENTION_MASK][:, : width + responses.shape[1]]
    tail = run(
        False,
        input_ids=responses,
        attention_mask=mask,
        position_ids=position_ids(mask)[:, width:],
        use_cache=True,
        **cache_kwargs(module, cache),
    )  # (B, R-1, D)
    return torch.cat([head.index_select(0, inverse), tail], dim=1)
