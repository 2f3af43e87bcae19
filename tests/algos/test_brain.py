"""BRAIn: self-normalized importance weights, the baseline-subtracted loss and its gradient,
against hand-computed numbers; DPO as its two-sample, argmax special case."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict

from placerl.algos.brain import BRAInObjective, brain_loss, brain_weights
from placerl.algos.preference import preference_loss
from placerl.types import Field


def t(x):
    return torch.tensor(x, dtype=torch.float64)


def test_weights_are_softmax_of_reward_over_beta_plus_prior_minus_proposal():
    # r/β = [1, 0], prior = proposal: α = [e/(1+e), 1/(1+e)] = [0.7310586, 0.2689414]
    alpha = brain_weights(t([[2.0, 0.0]]), t([[-3.0, -5.0]]), t([[-3.0, -5.0]]), beta=2.0)
    assert alpha[0].tolist() == pytest.approx([0.7310586, 0.2689414], abs=1e-7)
    # equal rewards: α ∝ p/q ; log p − log q = [1, 0, −1] → softmax = [0.6652, 0.2447, 0.0900]
    alpha = brain_weights(t([[4.0, 4.0, 4.0]]), t([[-1.0, -2.0, -3.0]]), t([[-2.0] * 3]), 0.5)
    assert alpha[0].tolist() == pytest.approx([0.6652410, 0.2447285, 0.0900306], abs=1e-7)
    assert float(alpha.sum()) == pytest.approx(1.0)


def test_loss_is_the_kl_between_self_normalized_weights():
    alpha = t([[0.7310586, 0.2689414]])
    policy = t([[-4.0, -4.0]]).requires_grad_()  # b = softmax(policy − proposal) = [½, ½]
    loss, stats = brain_loss(policy, t([[-1.0, -1.0]]), alpha)
    # KL(α‖b) = 0.7310586·ln(2·0.7310586) + 0.2689414·ln(2·0.2689414) = 0.1109441
    expected = 0.7310586 * math.log(2 * 0.7310586) + 0.2689414 * math.log(2 * 0.2689414)
    assert loss.item() == pytest.approx(expected, abs=1e-7)
    assert loss.item() == pytest.approx(0.1109441, abs=1e-6)
    loss.backward()
    # the BRAIn gradient: −(α − b)  →  [0.5 − 0.7310586, 0.5 − 0.2689414]
    assert policy.grad[0].tolist() == pytest.approx([-0.2310586, 0.2310586], abs=1e-7)
    assert stats["brain/max_weight"].item() == pytest.approx(0.7310586)


def test_gradient_is_alpha_minus_baseline_weights_averaged_over_prompts():
    g = torch.Generator().manual_seed(0)
    policy = torch.randn(3, 4, generator=g, dtype=torch.float64).requires_grad_()
    proposal = torch.randn(3, 4, generator=g, dtype=torch.float64)
    alpha = torch.softmax(torch.randn(3, 4, generator=g, dtype=torch.float64), -1)
    loss, _ = brain_loss(policy, proposal, alpha)
    loss.backward()
    baseline = torch.softmax(policy.detach() - proposal, -1)
    assert torch.allclose(policy.grad, -(alpha - baseline) / 3)


def test_loss_is_zero_iff_policy_weights_match_the_posterior():
    proposal = t([[-1.0, -2.0, -3.0]])
    alpha = t([[0.5, 0.3, 0.2]])
    matched = proposal + torch.log(alpha) + 7.0  # any constant shift: same b
    assert brain_loss(matched, proposal, alpha)[0].item() == pytest.approx(0.0, abs=1e-12)
    assert brain_loss(proposal, proposal, alpha)[0].item() > 0.01


def test_effective_sample_share():
    uniform, onehot = t([[0.25] * 4]), t([[0.0, 1.0, 0.0, 0.0]])
    zeros = t([[0.0] * 4])
    assert brain_loss(zeros, zeros, uniform)[1]["brain/ess_share"].item() == pytest.approx(1.0)
    assert brain_loss(zeros, zeros, onehot)[1]["brain/ess_share"].item() == pytest.approx(0.25)


def test_two_samples_with_argmax_weights_is_dpo_with_beta_one():
    """The paper's DPO-sft special case: n = 2, q = p (SFT), α one-hot on the higher reward."""
    g = torch.Generator().manual_seed(3)
    policy = torch.randn(5, 2, generator=g, dtype=torch.float64)
    sft = torch.randn(5, 2, generator=g, dtype=torch.float64)
    winner_first = t([[1.0, 0.0]] * 5)
    loss, _ = brain_loss(policy, sft, winner_first)
    dpo, _ = preference_loss(
        policy[:, 0], policy[:, 1], sft[:, 0], sft[:, 1], kind="sigmoid", beta=1.0
    )
    assert loss.item() == pytest.approx(dpo.item(), abs=1e-12)


def _groups(ref: bool) -> TensorDict:
    """One prompt, two samples of two tokens (the second sample's last token is padding)."""
    fields = {
        Field.SCORES: torch.tensor([[1.0, 0.0]]),
        Field.RESPONSE_MASK: torch.tensor([[[1, 1], [1, 0]]]),
        Field.OLD_LOG_PROBS: torch.tensor([[[-1.0, -1.0], [-1.0, -9.0]]]),  # q: [−2, −1]
    }
    if ref:
        fields[Field.REF_LOG_PROBS] = torch.tensor([[[-0.5, -0.5], [-2.0, -9.0]]])  # p: [−1, −2]
    return TensorDict(fields, batch_size=[1, 2])


def test_objective_reads_sequence_sums_and_uses_the_proposal_as_prior_without_reference():
    objective = BRAInObjective(beta=1.0)
    # no reference: log p − log q = 0, α = softmax(r) = [0.7311, 0.2689]
    assert objective.target_weights(_groups(False))[0].tolist() == pytest.approx(
        [0.7310586, 0.2689414], abs=1e-6
    )
    # with a reference: logits = r + p − q = [1 + (−1) − (−2), 0 + (−2) − (−1)] = [2, −1]
    alpha = objective.target_weights(_groups(True))[0]
    assert alpha.tolist() == pytest.approx([1 / (1 + math.exp(-3)), 1 / (1 + math.exp(3))], 1e-6)
    # the loss takes the policy's (G, n, R) log-probs; equal to the proposal: b = softmax(0)
    loss, _ = objective(_groups(True)[Field.OLD_LOG_PROBS].clone(), _groups(True))
    a = 1 / (1 + math.exp(-3))
    expected = a * math.log(2 * a) + (1 - a) * math.log(2 * (1 - a))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
