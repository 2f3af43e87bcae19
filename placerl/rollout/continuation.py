"""One turn of many sequences with placerl's sampler, each continuing where it stopped.

A multi-turn episode alternates model turns and observations (tool results, the next
generation prompt). Between turns a sequence's keys and values are kept (``Context``), compacted
to its real tokens (models/kv_cache.py); the next turn feeds only what is new — the token
sampled last, which the model has not seen yet (the turn's end token), then the observation
tokens — on top of the kept cache, and samples on. The prefix is never recomputed.

The sequences of one call may be at different turns and lengths: their caches are left-padded
to one width, their new tokens left-padded to another, so the batch's mask has holes between
the two. Position ids count each row's real tokens, as everywhere in placerl, so a
continued row sees exactly the positions and keys a single forward over its whole sequence
would (numerically: the same up to float rounding of differently shaped matmuls; tested
against the trainer's recomputed log-probs).

A first turn of only fresh prompts takes the ordinary prefill (a repeated prompt computed
once, rollout/sampling.py). ``reuse_cache=False``, or a model whose cache cannot be compacted
(sliding-window layers), recomputes every row's whole sequence instead: slower, same tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from transformers import DynamicCache

from placerl.data.collate import left_pad
from placerl.models.device import model_device
from placerl.models.kv_cache import RowCache, rows_reusable, stack_rows, take_rows
from placerl.models.precision import autocast
from placerl.rollout.sampling import (
    Finished,
    Prefilled,
    SamplingParams,
    decode,
    last_logits,
    prefill,
)


@dataclass(frozen=True)
class Context:
    """A sequence between turns: ``ids`` every token so far, the last one sampled but not yet
    fed to the model; ``cache`` the keys and values of all the others (None: recompute)."""

    ids: tuple[int, ...]
    cache: RowCache | None


@dataclass(frozen=True)
class TurnRequest:
    """Sample one turn after appending ``ids`` — the prompt of a fresh sequence (``context``
    None) or the observation tokens of a continued one — at most ``max_new_tokens``, with
    ``uniforms`` (≥ max_new_tokens,) as its noise (None: greedy). ``keep``: keep the sequence's
    cache for another turn if this one ends properly."""

    ids: tuple[int, ...]
    context: Context | None
    max_new_tokens: int
    uniforms: Tensor | None = None
    keep: bool = True


@dataclass(frozen=True)
class TurnResult:
    """The sampled tokens and their behaviour log-probs; ``ended``: by an end token or a stop
    string (not the token limit); ``context``: where a next turn starts (None when not
    kept: not ``ended`` or not ``keep``)."""

    ids: tuple[int, ...]
    log_probs: tuple[float, ...]
    ended: bool
    context: Context | None


@torch.no_grad()
def generate_turns(
    model: torch.nn.Module,
    requests: Sequence[TurnRequest],
    params: SamplingParams,
    *,
    eos_token_id: int | Sequence[int],
    pad_token_id: int,
    tokenizer=None,
    reuse_cache: bool = True,
) -> list[TurnResult]:
    """One turn for each request, batched; ``params.max_new_tokens`` is ignored (each request
    has its own limit), the rest (temperature, top-k/p, stop strings, precision) applies."""
    if not requests:
        return []
    if any(r.max_new_tokens < 1 for r in requests):
        raise ValueError("every turn request needs max_new_tokens >= 1")
    device = model_device(model)
    budget = max(r.max_new_tokens for r in requests)
    params = replace(params, max_new_tokens=budget)
    limits = torch.tensor([r.max_new_tokens for r in requests], device=device)
    uniforms = _stack_uniforms(requests, budget, params.greedy, device)
    was_training = model.training
    model.eval()
    try:
        with autocast(params.precision):
            start, full = _start(model, requests, pad_token_id, device, reuse_cache)
            keeper = _Keeper(requests, full, reuse_cache and rows_reusable(start.cache))
            response, mask, log_probs = decode(
                model,
                start,
                params,
                eos_token_id,
                pad_token_id,
                uniforms,
                tokenizer,
                limits=limits,
                on_finish=keeper,
            )
    finally:
        model.train(was_training)
    return keeper.results(response, mask, log_probs)


def _start(
    model, requests: Sequence[TurnRequest], pad: int, device, reuse_cache: bool
) -> tuple[Prefilled, list[tuple[int, ...]]]:
    """Feed every request's new tokens; returns the prefilled batch and each row's full token
    ids so far (what its context will extend)."""
    full = [(*(r.context.ids if r.context else ()), *r.ids) for r in requests]
    cached = [r.context.cache if reuse_cache and r.context else None for r in requests]
    if all(c is None for c in cached):  # fresh prompts, or recompute: one plain prefill
        ids, mask = (t.to(device) for t in left_pad(full, pad))
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=model.config)
        logits = prefill(model, ids, mask, positions, cache)
        return Prefilled(cache, logits, mask, positions[:, -1:] + 1), full
    cache, cache_mask = stack_rows(cached, model.config)
    chunks = [
        full[i][-len(r.ids) - 1 :] if c is not None else full[i]  # the pending token + new
        for i, (r, c) in enumerate(zip(requests, cached))
    ]
    ids, chunk_mask = (t.to(device) for t in left_pad(chunks, pad))
    before = torch.tensor([c.length if c is not None else 0 for c in cached], device=device)
    positions = (before[:, None] + chunk_mask.cumsum(-1) - 1).clamp(min=0)
    mask = torch.cat([cache_mask.to(device), chunk_mask], dim=1)
    logits = last_logits(model, ids, mask, positions, cache)
    return Prefilled(cache, logits, mask, positions[:, -1:] + 1), full


def _stack_uniforms(
    requests: Sequence[TurnRequest], budget: int, greedy: bool, device
) -> Tensor | None:
    """(B, budget) noise: each request's own, cut or padded (padding is never read: a row stops
    at its own limit)."""
    if greedy:
        return None
    out = torch.full((len(requests), budget), 0.5, dtype=torch.float32)
    for i, r in enumerate(requests):
        if r.uniforms is None:
            raise ValueError("sampling (not greedy) needs each request's uniforms")
        n = min(budget, r.uniforms.shape[0])
        out[i, :n] = r.uniforms[:n].float().cpu()
    return out.to(device)


class _Keeper:
    """``decode``'s ``on_finish``: notes how each row stopped, and takes the cache rows of the
    sequences that go on (ended properly, ``keep`` asked)."""

    def __init__(self, requests: Sequence[TurnRequest], full: list[tuple[int, ...]], cache: bool):
        self.requests, self.full, self.cache = requests, full, cache
        self.ended: dict[int, bool] = {}
        self.kept: dict[int, RowCache | None] = {}

    def __call__(self, done: Finished) -> None:
        rows, ended = done.rows.tolist(), done.ended.tolist()
        self.ended.update(zip(rows, ended))
        wanted = [i for i, (r, e) in enumerate(zip(rows, ended)) if e and self.requests[r].keep]
        if not wanted:
            return
        local = done.local[wanted]
        caches = take_rows(done.cache, local, done.mask) if self.cache else [None] * len(wanted)
        for i, cache in zip(wanted, caches):
            self.kept[rows[i]] = cache

    def results(self, response: Tensor, mask: Tensor, log_probs: Tensor) -> list[TurnResult]:
        out = []
        ids_rows, lp_rows = response.tolist(), log_probs.tolist()
        for row, n in enumerate(mask.sum(-1).tolist()):
            ids, lps = tuple(ids_rows[row][:n]), tuple(lp_rows[row][:n])
            context = None
            if row in self.kept:
                context = Context((*self.full[row], *ids), self.kept[row])
                _check(context)
            out.append(TurnResult(ids, lps, self.ended.get(row, False), context))
        return out


def _check(context: Context) -> None:
    """The kept cache must cover every token but the last, the one not yet fed."""
    if context.cache is not None and context.cache.length != len(context.ids) - 1:
        raise RuntimeError(
            f"continuation cache holds {context.cache.length} positions for "
            f"{len(context.ids) - 1} tokens"
        )
