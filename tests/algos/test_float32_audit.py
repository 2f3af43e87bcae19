"""The float32 audit of the rest of the math (issue 17.3), as properties over random inputs.

Where a value must be exactly zero (no signal in, no update out) or finite (garbage in padding,
extreme log-ratios), it is checked over seeded random draws of the whole float32 range, not one
example. ``test_float32_exact.py`` holds the defects the audit found first (group advantages,
k3 at padding, the PPO ratio); this file holds the places the audit then went through.
"""

from __future__ import annotations

import pytest
import torch

from placerl.algos import core
from placerl.algos.kl import token_rewards_from_scores
from placerl.algos.preference import PREFERENCE_KINDS, preference_loss, sequence_log_probs
from placerl.algos.reward_model import bradley_terry_loss

DRAWS = 200
GARBAGE = torch.tensor([float("inf"), float("-inf"), float("nan"), 1e30, -1e30, 3e38])


def garbage_padding(g: torch.Generator, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x with every padded position (mask 0) replaced by inf, -inf, NaN or a huge value."""
    pick = GARBAGE[torch.randint(0, len(GARBAGE), x.shape, generator=g)]
    return torch.where(mask.bool(), x, pick)


def random_case(g: torch.Generator, scale: float = 1.0):
    rows, width = (
        int(torch.randint(1, 6, (1,), generator=g)),
        int(torch.randint(1, 9, (1,), generator=g)),
    )
    mask = (torch.rand(rows, width, generator=g) < 0.7).long()
    return mask, lambda: torch.randn(rows, width, generator=g) * scale


def test_gae_of_no_reward_and_no_value_is_exactly_zero_whatever_the_padding_holds():
    g = torch.Generator().manual_seed(41)
    for _ in range(DRAWS):
        mask, _ = random_case(g)
        zeros = torch.zeros(mask.shape)
        rewards, values = garbage_padding(g, zeros, mask), garbage_padding(g, zeros, mask)
        gamma, lam = float(torch.rand(1, generator=g)), float(torch.rand(1, generator=g))
        adv, ret = core.compute_gae(rewards, values, mask, gamma, lam)
        assert torch.equal(adv, zeros) and torch.equal(ret, zeros)


def test_gae_is_finite_and_zero_on_padding_for_any_padded_values():
    g = torch.Generator().manual_seed(43)
    for _ in range(DRAWS):
        scale = 10 ** float(torch.rand(1, generator=g) * 6)
        mask, draw = random_case(g, scale)
        rewards, values = garbage_padding(g, draw(), mask), garbage_padding(g, draw(), mask)
        adv, ret = core.compute_gae(rewards, values, mask, 0.99, 0.95)
        assert torch.isfinite(adv).all() and torch.isfinite(ret).all(), scale
        assert not adv[mask == 0].any() and not ret[mask == 0].any()


def test_value_loss_is_finite_with_garbage_padding_and_zero_when_values_hit_their_targets():
    g = torch.Generator().manual_seed(47)
    for _ in range(DRAWS):
        mask, draw = random_case(g, 10 ** float(torch.rand(1, generator=g) * 4))
        values = garbage_padding(g, draw(), mask).requires_grad_(True)
        old = garbage_padding(g, draw(), mask)
        returns = garbage_padding(g, draw(), mask)
        for clip in (None, 0.2):
            loss, stats = core.value_loss_clipped(values, old, returns, mask, clip=clip)
            (grad,) = torch.autograd.grad(loss, values)
            assert torch.isfinite(loss) and torch.isfinite(grad).all(), clip
            assert not grad[mask == 0].any() and torch.isfinite(stats["vf_clip_frac"])
        hit = returns.clone().requires_grad_(True)  # every valid value on its target
        loss, _ = core.value_loss_clipped(hit, hit.detach(), returns, mask)
        (grad,) = torch.autograd.grad(loss, hit)
        assert loss.item() == 0.0 and not grad.any()


@pytest.mark.parametrize("mode", core.AGG_MODES)
def test_every_aggregation_of_an_empty_mask_is_zero_not_nan(mode):
    g = torch.Generator().manual_seed(53)
    for _ in range(50):
        mask, draw = random_case(g)
        empty = torch.zeros_like(mask)
        loss_mat = garbage_padding(g, draw(), empty)
        assert core.aggregate_loss(loss_mat, empty, mode, norm=4.0).item() == 0.0
        assert core.masked_mean(loss_mat, empty).item() == 0.0
        assert core.masked_var(loss_mat, empty).item() == 0.0


def test_token_rewards_put_the_score_on_the_last_token_and_nothing_on_padding():
    g = torch.Generator().manual_seed(59)
    for _ in range(DRAWS):
        mask, draw = random_case(g)
        kl = garbage_padding(g, draw(), mask)
        scores = torch.randn(mask.shape[0], generator=g) * 1e6
        rewards = token_rewards_from_scores(scores, mask, kl, kl_coef=0.05)
        assert torch.isfinite(rewards).all() and not rewards[mask == 0].any()
        zero = token_rewards_from_scores(
            torch.zeros_like(scores), mask, torch.zeros(mask.shape), 0.05
        )
        assert not zero.any()


@pytest.mark.parametrize("kind", PREFERENCE_KINDS)
def test_preference_losses_are_finite_for_any_log_probability_gap(kind):
    g = torch.Generator().manual_seed(61)
    for _ in range(DRAWS):
        scale = 10 ** float(torch.rand(1, generator=g) * 5)  # sequence log-probs up to ~1e5
        policy = (torch.randn(2, 8, generator=g) * scale).requires_grad_(True)
        ref = torch.randn(2, 8, generator=g) * scale
        smoothing = {"label_smoothing": 0.1} if kind == "sigmoid" else {}
        loss, _ = preference_loss(
            policy[0], policy[1], ref[0], ref[1], kind=kind, beta=0.1, **smoothing
        )
        (grad,) = torch.autograd.grad(loss.mean(), policy)
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all(), (kind, scale)


def test_sequence_log_probs_do_not_read_padding():
    g = torch.Generator().manual_seed(67)
    for _ in range(DRAWS):
        mask, draw = random_case(g)
        token = garbage_padding(g, -draw().abs(), mask).requires_grad_(True)
        for average in (False, True):
            total = sequence_log_probs(token, mask, average=average)
            (grad,) = torch.autograd.grad(total.sum(), token)
            assert torch.isfinite(total).all() and not grad[mask == 0].any()


def test_bradley_terry_is_finite_for_any_score_gap_and_ties_give_log_two():
    # up to 1e30: a gap of two scores beyond float32's 3.4e38 is inf before the loss sees it
    g = torch.Generator().manual_seed(71)
    for _ in range(DRAWS):
        scale = 10 ** float(torch.rand(1, generator=g) * 30)
        chosen = (torch.randn(8, generator=g) * scale).requires_grad_(True)
        rejected = torch.randn(8, generator=g) * scale
        loss = bradley_terry_loss(chosen, rejected)
        (grad,) = torch.autograd.grad(loss, chosen)
        assert torch.isfinite(loss) and torch.isfinite(grad).all(), scale
        tie = bradley_terry_loss(chosen.detach(), chosen.detach())
        assert tie.item() == pytest.approx(0.6931471805599453, rel=1e-6)
