"""Tool-response (observation) tokens are context, never trained on: the policy loss, its KL
and entropy terms, and a whole actor update are blind to what sits at observation positions
(their old/ref log-probs, advantages), and their gradient there is exactly zero."""

from __future__ import annotations

import pytest
import torch

from placerl.algos.objectives import PolicyObjective, policy_loss
from placerl.config.schema import OptimConfig
from placerl.models.loading import LoadOptions, load_policy, load_tokenizer
from placerl.roles.actor import ActorWorker
from placerl.rollout.envs import EpisodeLimits
from placerl.rollout.episodes.batch import episodes_to_batch
from placerl.rollout.episodes.runner import run_episodes
from placerl.tasks.tool_arithmetic import TOOL_CHAT_TEMPLATE, ToolArithmeticTask, make_env
from placerl.types import Field
from tests.rollout.scripted import ScriptedTurns, calculator_oracle

AGGS = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir, LoadOptions())
    tok.chat_template = TOOL_CHAT_TEMPLATE
    return tok


def episode_batch(tokenizer, seed: int):
    """Calculator episodes (a call, the tool's result, the answer) with random training
    fields on every response position."""
    rows = ToolArithmeticTask().prompt_rows(4, seed=seed)
    sampler = ScriptedTurns(tokenizer, calculator_oracle, tokenizer.eos_token_id)
    episodes = run_episodes(sampler, make_env, rows, tokenizer, EpisodeLimits(), max_new_tokens=128)
    batch = episodes_to_batch(episodes, tokenizer.pad_token_id)
    g = torch.Generator().manual_seed(seed)
    shape = batch[Field.RESPONSE_IDS].shape
    mask = batch[Field.RESPONSE_MASK]
    batch[Field.OLD_LOG_PROBS] = (-2.0 + 0.3 * torch.randn(shape, generator=g)) * mask
    batch[Field.REF_LOG_PROBS] = -2.0 + 0.3 * torch.randn(shape, generator=g)
    batch[Field.ADVANTAGES] = torch.randn(shape[0], 1, generator=g) * mask
    return batch


def observation(batch) -> torch.Tensor:
    response_width = batch[Field.RESPONSE_IDS].shape[1]
    attended = batch[Field.ATTENTION_MASK][:, -response_width:].bool()
    return attended & ~batch[Field.RESPONSE_MASK].bool()


def scramble(batch, seed: int):
    """The batch with garbage at observation positions of every per-token training field."""
    out = batch.clone()
    where = observation(batch)
    g = torch.Generator().manual_seed(1000 + seed)
    for key in (Field.OLD_LOG_PROBS, Field.REF_LOG_PROBS, Field.ADVANTAGES):
        noise = 50 * torch.randn(out[key].shape, generator=g)
        out[key] = torch.where(where, noise, out[key])
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("agg", AGGS)
def test_the_loss_has_no_gradient_at_observation_tokens(tokenizer, seed, agg):
    batch = episode_batch(tokenizer, seed)
    where = observation(batch)
    assert where.any(), "scenario: episodes with tool results"
    g = torch.Generator().manual_seed(seed)
    objective = PolicyObjective(loss_agg=agg, kl_coef=0.1, entropy_coef=0.01, loss_norm=64.0)
    for candidate in (batch, scramble(batch, seed)):
        log_probs = (-2.0 + 0.3 * torch.randn(where.shape, generator=g)).requires_grad_(True)
        entropy = torch.rand(where.shape, generator=g).requires_grad_(True)
        loss, _ = policy_loss(log_probs, entropy, candidate, objective)
        grads = torch.autograd.grad(loss, [log_probs, entropy])
        for grad in grads:
            assert torch.count_nonzero(grad[where]) == 0
            assert torch.count_nonzero(grad[candidate[Field.RESPONSE_MASK].bool()]) > 0
    losses = []
    for candidate in (batch, scramble(batch, seed)):
        log_probs = -2.0 + 0.1 * batch[Field.RESPONSE_MASK].float()
        losses.append(policy_loss(log_probs, None, candidate, objective)[0])
    assert torch.equal(losses[0], losses[1])


def test_an_actor_update_is_blind_to_what_sits_at_observation_tokens(tokenizer, tiny_model_dir):
    batch = episode_batch(tokenizer, seed=7)
    weights = []
    for candidate in (batch, scramble(batch, 7)):
        model = load_policy(tiny_model_dir)
        actor = ActorWorker(model, OptimConfig(lr=1e-2), 1)
        actor.update(candidate, PolicyObjective(kl_coef=0.1))
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key
