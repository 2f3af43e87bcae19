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
    precision: str = "fp32",
    sampler=None,
) -> dict[str, float]:
    """``eval/accuracy`` (exact match, when prompts have an ``answer`` column) and
    ``eval/reward`` (the run's reward, when given) of greedy responses, sampled where
    ``model`` lives and in the run's ``precision``; or by ``sampler(ids, mask, params)``, a
    rollout that samples the current policy where it lives (Ray workers), when given."""
    params = SamplingParams(
        max_new_tokens=max_new_tokens,
        greedy=True,
        stop_strings=stop_strings,
        precision=precision,
    )
    correct, reward_sum = 0.0, 0.0
    chunks = _sampled_chunks(model, tokenizer, prompts, params, batch_size, sampler=sampler)
    for chunk, batch in chunks:
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


@torch.no_grad()
def kl_to_reference(
    model,
    reference,
    tokenizer,
    prompts: PromptSet,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
) -> float:
    """KL(π‖π_ref) per response, in nats: the mean over sampled responses y ~ π of
    Σ_t log π(y_t|·) − log π_ref(y_t|·) (the k1 estimator; unbiased for the sequence KL)."""
    from placerl.roles.common import response_log_probs

    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature)
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    was_training = reference.training
    reference.eval()
    for _, batch in _sampled_chunks(model, tokenizer, prompts, params, batch_size, generator):
        ref, _ = response_log_probs(reference, batch, temperature)
        diff = (batch["old_log_probs"] - ref) * batch["response_mask"]
        total += float(diff.sum())
    reference.train(was_training)
    return total / max(1, len(prompts))


def _sampled_chunks(
    model, tokenizer, prompts: PromptSet, params, batch_size, generator=None, sampler=None
):
    """(prompt chunk, sampled batch) over the prompts, ``batch_size`` at a time."""
    for start in range(0, len(prompts), batch_size):
        idx = list(range(start, min(start + batch_size, len(prompts))))
        chunk = prompts.batch(idx, tokenizer.pad_token_id)
        if sampler is not None:
            yield chunk, sampler(chunk.ids, chunk.mask, params)
            continue
        batch = generate(
            model,
            chunk.ids,
            chunk.mask,
            params,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            generator=generator,
            tokenizer=tokenizer,
        )
        yield chunk, batch
