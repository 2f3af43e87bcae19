"""Three loss defects, each pinned by a test that failed before its fix (issue 10, item 6):

1. the entropy bonus had no gradient (``-entropy_coef·H`` was a constant): with zero advantages
   and entropy_coef = 1 the gradient norm was exactly 0; skipping zero-advantage rows must not
   skip the rows the entropy term needs;
2. a KL *loss* with k1 (PPO's default with kl_in_reward: false) does not regularise: its
   gradient is ∇log π whatever π_ref is; k1/abs as a loss are refused, PPO's loss default is k3;
3. Dr. GRPO's seq-mean-token-sum-norm divided by the longest response of the step instead of
   the generation budget rollout.max_new_tokens.
"""

from __future__ import annotations

import pytest
import torch

from placerl.algos.objectives import PolicyObjective, policy_loss
from placerl.algos.ppo import PPO
from placerl.config.loader import load_config
from placerl.config.schema import OptimConfig, PPOConfig, RunConfig
from placerl.errors import UserError
from placerl.roles.actor import ActorWorker
from placerl.stages.online import make_algorithm
from placerl.types import Field
from tests.synthetic import rollout_batch, tiny_lm


@pytest.mark.parametrize("skip", [False, True])
def test_entropy_bonus_has_a_gradient_even_with_zero_advantages(skip):
    batch = rollout_batch(groups=2, group_size=2, seed=1, zero_groups=(0, 1))
    assert not batch[Field.ADVANTAGES].any(), "scenario: nothing but the entropy term"
    actor = ActorWorker(tiny_lm(seed=1), OptimConfig(lr=1e-3), 1)
    objective = PolicyObjective(entropy_coef=1.0, skip_uninformative=skip)
    stats = actor.update(batch, objective)
    assert stats["actor/grad_norm"] > 1e-3
    assert "actor/skipped_share" not in stats  # the entropy term needs every row


def test_skipping_still_skips_when_no_term_needs_the_rows():
    batch = rollout_batch(groups=2, group_size=2, seed=1, zero_groups=(0,))
    actor = ActorWorker(tiny_lm(seed=1), OptimConfig(lr=1e-3), 1)
    stats = actor.update(batch, PolicyObjective(skip_uninformative=True))
    assert stats["actor/skipped_share"] == pytest.approx(0.5)


def _kl_gradient(estimator: str) -> torch.Tensor:
    """∂ KL-loss / ∂ log π at π = π_ref, with zero advantages: 0 for a KL that regularises."""
    batch = rollout_batch(groups=2, group_size=2, seed=3, zero_groups=(0, 1))
    log_probs = batch[Field.REF_LOG_PROBS].clone().requires_grad_(True)
    batch[Field.OLD_LOG_PROBS] = batch[Field.REF_LOG_PROBS]
    loss, _ = policy_loss(
        log_probs, None, batch, PolicyObjective(kl_coef=0.5, kl_estimator=estimator)
    )
    (grad,) = torch.autograd.grad(loss, log_probs)
    return grad


def test_ppo_kl_loss_default_is_an_estimator_whose_gradient_regularises():
    algo = PPO(PPOConfig(kl_in_reward=False, kl_coef=0.1))
    estimator = algo.policy_objective.kl_estimator
    assert estimator in ("k2", "k3")
    assert float(_kl_gradient(estimator).abs().max()) == 0.0  # at the reference: no pull
    assert PPO(PPOConfig()).kl_estimator == "k1"  # in the reward, k1 (InstructGPT) stays


@pytest.mark.parametrize("estimator", ["k1", "abs"])
def test_a_kl_loss_that_does_not_regularise_is_refused(estimator):
    with pytest.raises(ValueError, match="cannot be a loss term"):
        PolicyObjective(kl_coef=0.1, kl_estimator=estimator)
    with pytest.raises(UserError, match="kl_estimator") as info:
        load_config(
            None,
            ["stage=ppo", "ppo.kl_in_reward=false", f"ppo.kl_estimator={estimator}"],
            RunConfig,
        )
    assert "reference" in str(info.value)
    with pytest.raises(UserError, match="grpo.kl_estimator"):
        load_config(
            None,
            [
                "stage=grpo",
                "rollout.samples_per_prompt=2",
                "grpo.kl_coef=0.1",
                f"grpo.kl_estimator={estimator}",
            ],
            RunConfig,
        )
    # in the reward every estimator is fine
    load_config(None, ["stage=ppo", f"ppo.kl_estimator={estimator}"], RunConfig)


def test_dr_grpo_normaliser_is_the_generation_budget_not_the_longest_response():
    cfg = load_config(
        None,
        [
            "stage=grpo",
            "rollout.samples_per_prompt=2",
            "rollout.max_new_tokens=16",
            "grpo.loss_agg=seq-mean-token-sum-norm",
        ],
        RunConfig,
    )
    objective = make_algorithm(cfg).objective
    batch = rollout_batch(groups=2, group_size=2, seed=5)
    batch[Field.OLD_LOG_PROBS] = torch.zeros_like(batch[Field.OLD_LOG_PROBS])
    zeros = torch.zeros_like(batch[Field.OLD_LOG_PROBS])
    loss, _ = policy_loss(zeros, None, batch, objective)  # ratio 1: loss_t = −A_t
    per_seq = -(batch[Field.ADVANTAGES] * batch[Field.RESPONSE_MASK]).sum(-1)
    assert batch[Field.RESPONSE_MASK].shape[1] < 16, "scenario: no response used the budget"
    assert float(loss) == pytest.approx(float(per_seq.mean() / 16), rel=1e-6)
