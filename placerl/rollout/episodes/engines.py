"""Engines behind the episode runner's ``TurnSampler``: ``sample(requests) -> results``.

placerl's own sampler (``PlacerlTurns``) runs each call as one batched decode and keeps each
episode's KV cache between turns (rollout/continuation.py).

vLLM (``VLLMTurns``, rollout/vllm_engine.py): its ``LLM.generate`` is one blocking batched
call like ours, so the same runner drives it — one request per episode per turn, the prompt
being the episode's whole token ids so far (``Context.ids`` + the request's ids; ``cache``
None). vLLM's automatic prefix caching finds the prefix's KV blocks by hash, so the prefix is
not recomputed either while its blocks stay cached. Each turn's seed comes from the
episode's own noise for that turn, as placerl's sampler draws from it. Better still would be
its async engine (``AsyncLLM``): one coroutine per episode, each awaiting its own
``generate`` and its own tools, so an episode's next turn starts the moment its tools return
instead of at the next batched call; the engine's continuous batching does the grouping.
That needs the runner's loop as coroutines; the record types stay the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from placerl.rollout.continuation import Context, TurnRequest, TurnResult, generate_turns
from placerl.rollout.sampling import SamplingParams


@dataclass
class PlacerlTurns:
    """placerl's sampler as a ``TurnSampler``."""

    model: torch.nn.Module
    params: SamplingParams
    eos_token_id: int | Sequence[int]
    pad_token_id: int
    tokenizer: object = None
    reuse_cache: bool = True

    def sample(self, requests: Sequence[TurnRequest]) -> list[TurnResult]:
        return generate_turns(
            self.model,
            requests,
            self.params,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            tokenizer=self.tokenizer,
            reuse_cache=self.reuse_cache,
        )


@dataclass
class VLLMTurns:
    """vLLM as a ``TurnSampler``: one request per episode per turn (module doc)."""

    engine: object  # rollout.vllm_engine.VLLMEngine
    params: SamplingParams

    def sample(self, requests: Sequence[TurnRequest]) -> list[TurnResult]:
        prompts = [(*(r.context.ids if r.context else ()), *r.ids) for r in requests]
        seeds = [
            None if r.uniforms is None else int(float(r.uniforms[0]) * 2**31) for r in requests
        ]
        limits = [r.max_new_tokens for r in requests]
        rows = self.engine.generate_ids(prompts, limits, self.params, seeds)
        out = []
        for request, prompt, (ids, log_probs, ended) in zip(requests, prompts, rows, strict=True):
            keep = ended and request.keep
            context = Context((*prompt, *ids), None) if keep else None
            out.append(TurnResult(tuple(ids), tuple(log_probs), ended, context))
        return out
