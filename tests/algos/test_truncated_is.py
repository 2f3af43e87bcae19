"""Truncated importance weights for stale samples, against hand-computed numbers, and the
policy loss that applies them only when the batch carries the sampler's log-probs."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict

from placerl.algos import core
from placerl.algos.objectives import PolicyObjective, policy_loss
from placerl.types import Field

NAN = float("nan")


def close(a, b, tol=1e-6):
    b = torch.as_tensor(b, dtype=torch.float64)
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64), b, atol=tol, rtol=0)


def test_truncated_weights_hand_values_cap_and_padding():
    # ratios π_old/μ = 0.5, 1, 3 (capped at 2), and a padded token holding NaN
    old = torch.log(torch.tensor([[0.5, 1.0, 3.0, 1.0]], dtype=torch.float64))
    rollout = torch.tensor([[0.0, 0.0, 0.0, NAN]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0]])
    weights, stats = core.truncated_importance_weights(old, rollout, mask, cap=2.0)
    close(weights, [[0.5, 1.0, 2.0, 0.0]])
    close(stats["is_weight_mean"], (0.5 + 1.0 + 2.0) / 3)
    close(stats["is_trunc_frac"], 1 / 3)


def test_truncated_weights_are_one_when_sampler_and_trainer_agree():
    logp = torch.log(torch.tensor([[0.2, 0.7, 0.9]]))
    weights, stats = core.truncated_importance_weights(logp, logp.clone(), torch.ones(1, 3), 2.0)
    assert torch.equal(weights, torch.ones(1, 3))  # exactly 1: the loss is bitwise unchanged
    assert float(stats["is_trunc_frac"]) == 0.0


def test_truncated_weights_carry_no_gradient_and_reject_bad_cap():
    old = torch.zeros(1, 2, requires_grad=True)
    weights, _ = core.truncated_importance_weights(old, torch.zeros(1, 2), torch.ones(1, 2), 2.0)
    assert not weights.requires_grad
    with pytest.raises(ValueError, match="cap"):
        core.truncated_importance_weights(old, old, torch.ones(1, 2), 0.0)


def _batch(rollout_log_probs=None):
    fields = {
        Field.RESPONSE_MASK: torch.tensor([[1, 1, 0]]),
        Field.OLD_LOG_PROBS: torch.zeros(1, 3),
        Field.ADVANTAGES: torch.tensor([[1.0, -1.0, 0.0]]),
    }
    if rollout_log_probs is not None:
        fields[Field.ROLLOUT_LOG_PROBS] = torch.tensor([rollout_log_probs])
    return TensorDict(fields, batch_size=[1])


def test_policy_loss_weights_tokens_only_with_rollout_log_probs_and_a_cap():
    log_probs = torch.zeros(1, 3)  # ratio π_θ/π_old = 1: loss_t = -A_t
    plain, stats = policy_loss(log_probs, None, _batch(), PolicyObjective(is_cap=2.0))
    close(plain, (-1.0 + 1.0) / 2)
    assert "actor/is_weight_mean" not in stats
    # μ = e^-1 on token 0 (ρ = e, capped at 2), e^{0.5} on token 1 (ρ = e^-0.5)
    stale = _batch([-1.0, 0.5, 0.0])
    loss, stats = policy_loss(log_probs, None, stale, PolicyObjective(is_cap=2.0))
    close(loss, (-1.0 * 2.0 + 1.0 * math.exp(-0.5)) / 2)
    close(stats["actor/is_trunc_frac"], 0.5)
    # no cap configured: the sampler's log-probs are ignored
    unweighted, _ = policy_loss(log_probs, None, stale, PolicyObjective(is_cap=None))
    close(unweighted, plain)
