"""Checks of episodes sampled by any ``TurnSampler``, shared by the vLLM episode tests (and
runnable with placerl's sampler where vLLM is not installed)."""

from __future__ import annotations

import torch

from placerl.rollout.envs import EpisodeLimits
from placerl.rollout.episodes.batch import episodes_to_batch
from placerl.rollout.episodes.runner import run_episodes
from placerl.types import Field
from tests.episodes.envs import echo_env

ROWS = [{"prompt": p} for p in ("rev 52814=", "rev 907=", "rev 1234567=", "add 3 4=")]
LIMITS = EpisodeLimits(max_turns=3, max_tokens=64)


def episodes(sampler, tokenizer, max_new_tokens=8, uniforms=None):
    return run_episodes(
        sampler, echo_env, ROWS, tokenizer, LIMITS, max_new_tokens=max_new_tokens, uniforms=uniforms
    )


def log_prob_gap(model, episodes_, pad_token_id: int) -> float:
    """The largest |sampler log-prob − the HF model's| over the episodes' model tokens, the
    HF model reading the batch the trainer trains on (observation tokens as context)."""
    batch = episodes_to_batch(episodes_, pad_token_id)
    with torch.no_grad():
        mask = batch[Field.ATTENTION_MASK]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(
            input_ids=batch[Field.INPUT_IDS], attention_mask=mask, position_ids=positions
        ).logits.float()
    width = batch[Field.RESPONSE_IDS].shape[1]
    lp = torch.log_softmax(logits[:, -width - 1 : -1], -1)
    lp = lp.gather(-1, batch[Field.RESPONSE_IDS].unsqueeze(-1)).squeeze(-1)
    valid = batch[Field.RESPONSE_MASK].bool()
    return float((batch[Field.OLD_LOG_PROBS] - lp).abs()[valid].max())
