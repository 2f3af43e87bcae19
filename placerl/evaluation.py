"""Held-out evaluation: greedy answers to held-out prompts, exact match and reward."""

from __future__ import annotations

import torch

from placerl.data.stream import PromptSet
from placerl.roles.reward import decode_responses
from placerl.rollout.sampling import SamplingParams, generate
from placerl.tasks.rewards import exact_match_reward


@torch.no_grad()
def evaluate_policy(
    model,
    tokenizer,
    prompts: PromptSet,
    *,
    max_new_tokens: int,
    stop_strings: tuple[str, ...] = (),
    reward=None,
    batch_size: int = 256,
) -> dict[str, float]:
    """``eval/accuracy`` (exact match, when prompts have an ``answer`` column) and
    ``eval/reward`` (the run's reward, when given) of greedy responses."""
    params = SamplingParams(max_new_tokens=max_new_tokens, greedy=True, stop_strings=stop_strings)
    correct, reward_sum = 0.0, 0.0
    for start in range(0, len(prompts), batch_size):
        idx = list(range(start, min(start + batch_size, len(prompts))))
        chunk = prompts.batch(idx, tokenizer.pad_token_id)
        batch = generate(
            model,
            chunk.ids,
            chunk.mask,
            params,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tokenizer=tokenizer,
        )
        if "answer" in chunk.columns:
            completions = decode_responses(tokenizer, batch)
            correct += sum(exact_match_reward(completions, chunk.columns["answer"]))
        if reward is not None:
            reward_sum += float(reward.score(batch, chunk.texts, chunk.columns).sum())
    metrics = {}
    if "answer" in prompts.columns:
        metrics["eval/accuracy"] = correct / max(1, len(prompts))
    if reward is not None:
        metrics["eval/reward"] = reward_sum / max(1, len(prompts))
    return metrics
