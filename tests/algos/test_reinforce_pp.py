"""REINFORCE++ and REINFORCE++-baseline advantages against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from placerl.algos import core, reinforce_pp
from placerl.algos.registry import TOKEN_ADVANTAGE_ESTIMATORS

NAN = float("nan")


def t(*rows):
    return torch.tensor(rows if len(rows) > 1 else rows[0], dtype=torch.float64)


def close(a, b, tol=1e-6):
    b = torch.as_tensor(b, dtype=torch.float64)
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64), b, atol=tol, rtol=0)


def test_reinforce_pp_hand_values_with_token_kl():
    scores = t([1.0, 0.0])
    mask = t([1, 1, 1], [1, 1, 0])
    kl = t([0.1, 0.2, 0.3], [0.5, -0.1, NAN])
    adv, ret = reinforce_pp.reinforce_pp_advantages(scores, mask, kl=kl, kl_coef=0.5)
    # token rewards −0.5·KL, score at the last token:
    #   row 0: −0.05, −0.1, −0.15 + 1 = 0.85;  row 1: −0.25, 0.05 + 0 = 0.05
    # returns (γ = 1, sums to the end):  row 0: 0.7, 0.75, 0.85;  row 1: −0.2, 0.05
    close(ret, [[0.7, 0.75, 0.85], [-0.2, 0.05, 0.0]])
    # whitening over 5 tokens: mean 2.15 / 5 = 0.43; deviations .27 .32 .42 −.63 −.38,
    # squares sum 0.893, unbiased var 0.893 / 4 = 0.22325, std 0.472493
    close(adv, [[0.5714366, 0.6772581, 0.8889013], [-1.3333520, -0.8042440, 0.0]])


def test_reinforce_pp_discounted_returns():
    rewards = t([[-0.05, -0.1, 0.85]])
    # γ = 0.5: R_2 = 0.85; R_1 = −0.1 + 0.5·0.85 = 0.325; R_0 = −0.05 + 0.5·0.325 = 0.1125
    close(reinforce_pp.discounted_returns(rewards, t([[1, 1, 1]]), 0.5), [[0.1125, 0.325, 0.85]])
    # an interior masked token (tool output) is skipped: γ counts valid tokens only
    # R_2 = 0.85; R_0 = −0.05 + 0.5·0.85 = 0.375
    masked = reinforce_pp.discounted_returns(t([[-0.05, NAN, 0.85]]), t([[1, 0, 1]]), 0.5)
    close(masked, [[0.375, 0.0, 0.85]])


def baseline_batch():
    scores = t([1.0, 0.0, 0.5, 0.5])  # group 0 has signal, group 1 is equal
    mask = t([1, 1], [1, 0], [1, 1], [1, 1])
    return scores, mask


def test_reinforce_pp_baseline_hand_values():
    scores, mask = baseline_batch()
    adv, ret = reinforce_pp.reinforce_pp_baseline_advantages(scores, mask, group_size=2)
    # group means 0.5 and 0.5: centred scores 0.5, −0.5, 0, 0 (the equal group exactly 0)
    close(ret, [[0.5, 0.5], [-0.5, 0.0], [0.0, 0.0], [0.0, 0.0]])
    assert torch.equal(ret[2:], torch.zeros(2, 2, dtype=torch.float64))
    # 7 valid tokens 0.5, 0.5, −0.5, 0, 0, 0, 0: mean 0.5 / 7 = 1/14,
    # Σ(x − m)² = Σx² − 7m² = 0.75 − 1/28 = 5/7, unbiased var 5/42, std 0.345033
    std = math.sqrt(5 / 42)
    m = 1 / 14
    expected = [[(0.5 - m) / std] * 2, [(-0.5 - m) / std, 0.0], [-m / std] * 2, [-m / std] * 2]
    close(adv, expected)  # 1.242118 ×2, −1.656157, and −0.207020 on the equal group


def test_reinforce_pp_baseline_without_recentring_keeps_equal_groups_at_zero():
    scores, mask = baseline_batch()
    adv, _ = reinforce_pp.reinforce_pp_baseline_advantages(
        scores, mask, group_size=2, recenter=False
    )
    # x / std with the same std 0.345033: ±0.5 / 0.345033 = ±1.449138, equal group 0
    close(adv, [[1.4491377, 1.4491377], [-1.4491377, 0.0], [0.0, 0.0], [0.0, 0.0]])


def test_baseline_kl_enters_per_token_after_the_group_mean():
    scores, mask = baseline_batch()
    kl = torch.full((4, 2), 0.2, dtype=torch.float64)
    _, ret = reinforce_pp.reinforce_pp_baseline_advantages(
        scores, mask, group_size=2, kl=kl, kl_coef=0.5
    )
    # −0.5·0.2 = −0.1 per token on top of the centred score at the last one
    # row 0: last 0.5 − 0.1 = 0.4, first −0.1 + 0.4 = 0.3;  row 1: −0.5 − 0.1 = −0.6
    # rows 2, 3: −0.1 and −0.2
    close(ret, [[0.3, 0.4], [-0.6, 0.0], [-0.2, -0.1], [-0.2, -0.1]])


def test_baseline_needs_groups():
    with pytest.raises(ValueError, match="group_size"):
        reinforce_pp.reinforce_pp_baseline_advantages(
            t([1.0, 0.0, 1.0]), torch.ones(3, 2), group_size=2
        )


@pytest.mark.parametrize("name", ["reinforce_pp", "reinforce_pp_baseline"])
def test_registered_with_one_signature(name):
    scores, mask = baseline_batch()
    kl = torch.zeros(4, 2, dtype=torch.float64)
    fn = TOKEN_ADVANTAGE_ESTIMATORS.get(name)
    adv, ret = fn(scores, mask, group_size=2, kl=kl, kl_coef=0.1, gamma=1.0)
    assert adv.shape == ret.shape == mask.shape
    close(core.masked_mean(adv, mask), 0.0)  # whitened over the whole batch
