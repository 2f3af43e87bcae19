"""Exact float32 math: values that must be exactly zero or finite, over many random inputs.

Each property is checked over seeded random draws (not one example): float32 values from
1e-30 to 1e30 in magnitude, both signs, subnormals and the usual partial-credit rewards
(0.7, 1.3, 2.7, 0.1), group sizes 2 … 64. The defects these pin down are described in
``placerl/algos/core.py`` (grpo_advantages, kl_estimate, policy_loss_clipped).
"""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict

from placerl.algos import core
from placerl.algos.kl import K3_LINEAR_BELOW, KL_KINDS, kl_estimate
from placerl.algos.objectives import PolicyObjective, policy_loss
from placerl.algos.skipping import informative_rows
from placerl.types import Field

DRAWS = 400
PARTIAL_CREDIT = [0.7, 1.3, 2.7, 0.1, -0.3, 1e-3, 3.14159, 1e7 + 0.1]


def random_float32(g: torch.Generator, n: int) -> torch.Tensor:
    """n finite float32 values spread over the whole range: log-uniform magnitudes, signs,
    subnormals, zeros and typical partial-credit rewards."""
    magnitude = 10 ** (torch.rand(n, generator=g, dtype=torch.float64) * 60 - 30)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()
    values = (magnitude * sign).float()
    special = torch.tensor(PARTIAL_CREDIT + [0.0, 1e-40, -1e-42, 3e38], dtype=torch.float32)
    pick = torch.randint(0, len(special), (n,), generator=g)
    use_special = torch.rand(n, generator=g) < 0.3
    return torch.where(use_special, special[pick], values)


ESTIMATORS = {
    "grpo": lambda s, k: core.grpo_advantages(s, k),
    "dr_grpo": lambda s, k: core.grpo_advantages(s, k, scale_by_std=False),
    "rloo": lambda s, k: core.rloo_advantages(s, k),
}


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_a_group_of_equal_rewards_gets_exactly_zero_for_any_value_and_size(name):
    g = torch.Generator().manual_seed(17)
    values = random_float32(g, DRAWS)
    for i, value in enumerate(values.tolist()):
        k = 2 + i % 63
        scores = torch.full((k,), value, dtype=torch.float32)
        adv = ESTIMATORS[name](scores, k)
        assert adv.dtype == torch.float32
        assert torch.equal(adv, torch.zeros(k)), (name, value, k, adv[:4])


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_equal_groups_stay_zero_beside_groups_with_signal(name):
    g = torch.Generator().manual_seed(5)
    for _ in range(100):
        k = int(torch.randint(2, 17, (1,), generator=g))
        groups = int(torch.randint(2, 6, (1,), generator=g))
        scores = random_float32(g, groups * k).clamp(-1e15, 1e15).view(groups, k)
        equal = torch.rand(groups, generator=g) < 0.5
        scores[equal] = scores[equal, :1].expand(-1, k)
        adv = ESTIMATORS[name](scores.reshape(-1), k).view(groups, k)
        assert torch.isfinite(adv).all()
        assert torch.equal(adv[equal], torch.zeros_like(adv[equal]))
        spread = scores.amax(1) > scores.amin(1)
        # a group with signal has a nonzero advantage somewhere, and equal rewards within it
        # get equal advantages
        assert (adv[spread] != 0).any(dim=1).all()
        for row in range(groups):
            for value in scores[row].unique():
                same = adv[row][scores[row] == value]
                assert torch.equal(same, same[:1].expand_as(same))


def test_the_issue_example_rounds_to_zero_not_to_a_fixed_sign():
    s = torch.tensor([0, 1, 0, 1, 0, 0, 1, 1] + [1.3] * 8 + [0.7] * 8, dtype=torch.float32)
    adv = core.grpo_advantages(s, 8).view(3, 8)
    # row 0: mean 0.5, unbiased std sqrt(8 * 0.25 / 7) = 0.5345 -> ±0.5 / 0.5345 = ±0.9354
    torch.testing.assert_close(adv[0], (s[:8] - 0.5) / (math.sqrt(2 / 7) + 1e-6))
    assert torch.equal(adv[1:], torch.zeros(2, 8))  # was -0.1192 and +0.0596 on every sample
    twelve = core.grpo_advantages(torch.full((12,), 2.7), 12)
    assert torch.equal(twelve, torch.zeros(12))  # was +0.477


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_equal_groups_are_uninformative_and_skipped(name):
    s = torch.tensor([0, 1, 0, 1, 0, 0, 1, 1] + [1.3] * 8 + [0.7] * 8, dtype=torch.float32)
    mask = torch.ones(24, 5, dtype=torch.long)
    mask[::3, 3:] = 0  # responses of different lengths
    batch = TensorDict(
        {
            Field.ADVANTAGES: core.expand_to_tokens(ESTIMATORS[name](s, 8), mask),
            Field.RESPONSE_MASK: mask,
        },
        batch_size=[24],
    )
    keep = informative_rows(batch, PolicyObjective(skip_uninformative=True))
    assert keep.tolist() == [True] * 8 + [False] * 16  # before: all 24 kept


def test_whitening_a_constant_gives_exactly_zero():
    g = torch.Generator().manual_seed(3)
    for value in random_float32(g, DRAWS).clamp(-1e15, 1e15).tolist():
        rows, width = (int(x) for x in torch.randint(1, 9, (2,), generator=g))
        mask = (torch.rand(rows, width, generator=g) < 0.7).long()
        mask[0, 0] = 1
        x = torch.full((rows, width), value, dtype=torch.float32)
        white = core.masked_whiten(x, mask)
        assert torch.equal(white, torch.zeros_like(white)), (value, white.abs().max())


def test_whitening_keeps_its_hand_values_in_float32():
    x = torch.tensor([1.0, 2.0, 3.0, 99.0])
    m = torch.tensor([1, 1, 1, 0])
    # mean 2, unbiased var 1 -> (x - 2) / 1
    torch.testing.assert_close(core.masked_whiten(x, m), torch.tensor([-1.0, 0.0, 1.0, 0.0]))


# ------------------------------------------------------------------------------------ KL


def test_k3_at_padding_has_a_finite_value_and_gradient():
    lp = torch.tensor([-1.0, -120.0], requires_grad=True)
    ref = torch.tensor([-1.2, -5.0])
    kl = kl_estimate(lp, ref, "k3", torch.tensor([1, 0]))
    kl.sum().backward()
    # real token: d = 0.2, k3 = e^-0.2 + 0.2 - 1 = 0.018731; ∂/∂lp = 1 - e^-0.2 = 0.181269
    torch.testing.assert_close(kl, torch.tensor([0.0187308, 0.0]))
    torch.testing.assert_close(lp.grad, torch.tensor([0.1812692, 0.0]))  # was [0.181, nan]


@pytest.mark.parametrize("kind", KL_KINDS)
def test_every_estimator_is_finite_with_bounded_gradient_for_any_padded_values(kind):
    g = torch.Generator().manual_seed(11)
    bound = math.exp(K3_LINEAR_BELOW) - 1.0
    for _ in range(200):
        shape = (int(torch.randint(1, 5, (1,), generator=g)), 7)
        scale = 10 ** float(torch.rand(1, generator=g) * 4)  # log-ratios up to ±1e4
        lp = (torch.randn(shape, generator=g) * scale).requires_grad_(True)
        ref = torch.randn(shape, generator=g) * scale
        mask = (torch.rand(shape, generator=g) < 0.6).long()
        ref = torch.where(mask.bool(), ref, torch.full_like(ref, 1e30))  # garbage padding
        kl = kl_estimate(lp, ref, kind, mask)
        kl.sum().backward()
        assert torch.isfinite(kl).all() and torch.isfinite(lp.grad).all(), (kind, scale)
        assert torch.equal(kl[mask == 0], torch.zeros_like(kl[mask == 0]))
        assert torch.equal(lp.grad[mask == 0], torch.zeros_like(lp.grad[mask == 0]))
        if kind == "k3":
            assert (kl >= 0).all()
            assert lp.grad.abs().max() <= bound * (1 + 1e-6)


def test_k3_is_exact_above_the_bound_and_continued_by_its_tangent_below():
    d = torch.linspace(-30.0, 30.0, 6001, dtype=torch.float64)
    zero = torch.zeros_like(d)
    kl = kl_estimate(d, zero, "k3")
    exact = torch.exp(-d) + d - 1
    inside = d >= -K3_LINEAR_BELOW
    torch.testing.assert_close(kl[inside], exact[inside], rtol=1e-12, atol=1e-12)
    c = K3_LINEAR_BELOW
    tangent = (math.exp(c) - c - 1) + (1 - math.exp(c)) * (d + c)
    torch.testing.assert_close(kl[~inside], tangent[~inside], rtol=1e-12, atol=1e-9)


# -------------------------------------------------------------------------------- losses


def test_policy_loss_and_gradient_are_finite_for_any_log_ratio():
    g = torch.Generator().manual_seed(23)
    for _ in range(200):
        shape = (int(torch.randint(1, 6, (1,), generator=g)), 6)
        scale = 10 ** float(torch.rand(1, generator=g) * 4)
        lp = (torch.randn(shape, generator=g) * scale).requires_grad_(True)
        old = torch.randn(shape, generator=g) * scale
        adv = torch.randn(shape, generator=g) * torch.randint(0, 2, shape, generator=g)
        mask = (torch.rand(shape, generator=g) < 0.7).long()
        loss, stats = core.policy_loss_clipped(lp, old, adv, mask, ratio_cap=3.0)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(lp.grad).all(), scale
        assert all(torch.isfinite(v) for v in stats.values())


def test_zero_advantages_give_exactly_zero_loss_and_gradient():
    g = torch.Generator().manual_seed(29)
    for _ in range(100):
        lp = (torch.randn(4, 6, generator=g) * 50).requires_grad_(True)
        old = torch.randn(4, 6, generator=g) * 50
        mask = (torch.rand(4, 6, generator=g) < 0.7).long()
        loss, _ = core.policy_loss_clipped(lp, old, torch.zeros(4, 6), mask)
        loss.backward()
        assert loss.item() == 0.0 and torch.equal(lp.grad, torch.zeros_like(lp.grad))


def test_policy_objective_with_a_kl_loss_is_finite_over_garbage_padding():
    mask = torch.tensor([[1, 1, 0, 0]])
    batch = TensorDict(
        {
            Field.RESPONSE_MASK: mask,
            Field.OLD_LOG_PROBS: torch.tensor([[-1.0, -2.0, 0.0, 0.0]]),
            Field.REF_LOG_PROBS: torch.tensor([[-1.5, -1.0, 1e30, -1e30]]),
            Field.ADVANTAGES: torch.tensor([[0.5, 0.5, 0.0, 0.0]]),
        },
        batch_size=[1],
    )
    lp = torch.tensor([[-1.0, -2.0, -200.0, 300.0]], requires_grad=True)
    loss, stats = policy_loss(lp, None, batch, PolicyObjective(kl_coef=0.1))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(lp.grad).all()
    assert torch.equal(lp.grad[0, 2:], torch.zeros(2))


def test_truncated_importance_weights_are_finite_and_capped_for_any_log_ratio():
    g = torch.Generator().manual_seed(31)
    for _ in range(200):
        scale = 10 ** float(torch.rand(1, generator=g) * 4)
        old = torch.randn(3, 5, generator=g) * scale
        behaviour = torch.randn(3, 5, generator=g) * scale
        mask = (torch.rand(3, 5, generator=g) < 0.7).long()
        behaviour = torch.where(mask.bool(), behaviour, torch.full_like(behaviour, -1e30))
        weights, stats = core.truncated_importance_weights(old, behaviour, mask, cap=2.0)
        assert torch.isfinite(weights).all() and (weights <= 2.0).all()
        assert torch.equal(weights[mask == 0], torch.zeros_like(weights[mask == 0]))
        assert all(torch.isfinite(v) for v in stats.values())
