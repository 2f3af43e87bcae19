"""Roles agree with each other on the batch layout: the sampler's log-probs are the actor's,
the critic reads one value per response token, the reward model reads the last real token."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from placerl.config.schema import OptimConfig
from placerl.data.collate import left_pad
from placerl.models.loading import load_policy, load_reward_model, load_tokenizer, load_value_model
from placerl.roles.actor import ActorWorker
from placerl.roles.critic import CriticWorker
from placerl.roles.reward import ModelReward
from placerl.roles.rollout import RolloutWorker
from placerl.rollout.sampling import SamplingParams
from placerl.types import Field


def _rollout(model_dir, temperature=0.8):
    tok = load_tokenizer(model_dir)
    policy = load_policy(model_dir)
    prompts = ["rev 12345=", "rev 9=", "rev 123="]
    ids, mask = left_pad([tok(p).input_ids for p in prompts], tok.pad_token_id)
    rollout = RolloutWorker(
        policy, tok, SamplingParams(max_new_tokens=6, temperature=temperature), seed=3
    )
    return tok, policy, rollout.generate(ids, mask)


def test_actor_recomputes_the_sampler_log_probs(tiny_model_dir):
    _, policy, batch = _rollout(tiny_model_dir)
    actor = ActorWorker(policy, OptimConfig(), 10, temperature=0.8)
    recomputed = actor.log_probs(batch)
    mask = batch[Field.RESPONSE_MASK].bool()
    torch.testing.assert_close(
        recomputed[mask], batch[Field.OLD_LOG_PROBS][mask], atol=1e-5, rtol=0
    )


def test_critic_values_cover_the_response_and_ignore_left_padding(tiny_model_dir):
    tok, _, batch = _rollout(tiny_model_dir)
    critic = CriticWorker(load_value_model(tiny_model_dir, tok.pad_token_id), OptimConfig(), 10)
    values = critic.values(batch)
    assert values.shape == batch[Field.RESPONSE_IDS].shape
    assert torch.all(values == 0)  # a new value head starts at zero
    with torch.no_grad():
        critic.model.score.weight.normal_()
    one = batch[1:2].clone()  # the same row with its left padding stripped
    pad = int((one[Field.PROMPT_MASK] == 0).sum())
    assert pad > 0, "row 1 has the shortest prompt, so it is padded"
    stripped = TensorDict(
        {
            Field.PROMPT_IDS: one[Field.PROMPT_IDS][:, pad:],
            Field.PROMPT_MASK: one[Field.PROMPT_MASK][:, pad:],
            Field.RESPONSE_IDS: one[Field.RESPONSE_IDS],
            Field.RESPONSE_MASK: one[Field.RESPONSE_MASK],
            Field.INPUT_IDS: one[Field.INPUT_IDS][:, pad:],
            Field.ATTENTION_MASK: one[Field.ATTENTION_MASK][:, pad:],
        },
        batch_size=[1],
    )
    torch.testing.assert_close(
        critic.values(batch)[1], critic.values(stripped)[0], atol=1e-5, rtol=0
    )


def test_reward_model_scores_the_last_real_token(tiny_model_dir):
    tok, _, batch = _rollout(tiny_model_dir)
    reward = ModelReward(load_reward_model(tiny_model_dir, tok.pad_token_id))
    scores = reward.score(batch, [], {})
    assert scores.shape == (3,)
    # appending padding to the right must not change a score
    wider = batch.clone()
    pad = torch.full((3, 2), tok.pad_token_id)
    wider[Field.INPUT_IDS] = torch.cat([batch[Field.INPUT_IDS], pad], 1)
    wider[Field.ATTENTION_MASK] = torch.cat([batch[Field.ATTENTION_MASK], torch.zeros_like(pad)], 1)
    torch.testing.assert_close(reward.score(wider, [], {}), scores, atol=1e-5, rtol=0)


def test_actor_update_moves_the_policy_toward_positive_advantages(tiny_model_dir):
    from placerl.algos.objectives import PolicyObjective

    _, policy, batch = _rollout(tiny_model_dir, temperature=1.0)
    actor = ActorWorker(policy, OptimConfig(lr=1e-2, grad_clip=None), 10)
    mask = batch[Field.RESPONSE_MASK]
    batch[Field.ADVANTAGES] = torch.where(mask.bool(), 1.0, 0.0)
    before = actor.log_probs(batch)
    actor.update(batch, PolicyObjective())
    after = actor.log_probs(batch)
    assert (after - before)[mask.bool()].mean() > 0
