"""CISPO against hand-computed numbers (arithmetic in the comments)."""

from __future__ import annotations

import math

import torch

from placerl.algos import cispo, core

NAN = float("nan")


def t(*rows, grad=False):
    x = torch.tensor(rows if len(rows) > 1 else rows[0], dtype=torch.float64)
    return x.requires_grad_(grad)


def close(a, b, tol=1e-6):
    b = torch.as_tensor(b, dtype=torch.float64)
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64), b, atol=tol, rtol=0)


def three_tokens():
    # log-ratios 0.5, −1.0 (row 0) and 0.1 (row 1, then padding)
    lp = t([-0.5, -2.0], [-0.3, NAN], grad=True)
    old = t([-1.0, -1.0], [-0.4, NAN])
    adv = t([1.0, 1.0], [-1.0, NAN])
    mask = t([1, 1], [1, 0])
    return lp, old, adv, mask


def test_cispo_hand_values_and_gradient():
    lp, old, adv, mask = three_tokens()
    loss, stats = cispo.cispo_loss(lp, old, adv, mask)  # the defaults: no lower bound, cap 1.2
    # r = e^0.5 = 1.648721 -> 1.2;  r = e^−1 = 0.367879 (no lower bound);  r = e^0.1 = 1.105171
    # loss_t = −r̂·A·log π: −1.2·1·(−0.5) = 0.6;  −0.367879·1·(−2) = 0.735759;
    #                      −1.105171·(−1)·(−0.3) = −0.331551
    # token-mean: (0.6 + 0.735759 − 0.331551) / 3 = 0.334736
    close(loss, 0.3347359)
    loss.backward()
    # ∂/∂log π_t = −r̂·A / 3 tokens: −0.4, −0.122626, +0.368390; padding 0
    close(lp.grad, [[-0.4, -0.1226265], [0.3683903, 0.0]])
    close(stats["clip_frac"], 1 / 3)  # only the first token's weight was clipped
    close(stats["ratio_mean"], (1.6487213 + 0.3678794 + 1.1051709) / 3)
    close(stats["cispo_weight_mean"], (1.2 + 0.3678794 + 1.1051709) / 3)


def test_cispo_lower_bound_when_given():
    lp, old, adv, mask = three_tokens()
    loss, _ = cispo.cispo_loss(lp, old, adv, mask, clip_low=0.2)
    # the second token's weight is now clipped up to 0.8: −0.8·1·(−2) = 1.6
    close(loss, (0.6 + 1.6 - 0.3315513) / 3)


def test_every_token_keeps_a_gradient_where_ppo_drops_it():
    lp = t([[-0.5]], grad=True)
    old = t([[-1.0]])  # r = e^0.5 = 1.648721, far above 1 + 0.2
    adv, mask = t([[1.0]]), t([[1]])
    ppo, _ = core.policy_loss_clipped(lp, old, adv, mask, clip_low=0.2, clip_high=0.2)
    ppo.backward()
    close(lp.grad, [[0.0]])  # PPO: the clipped branch is active, no gradient
    lp.grad = None
    loss, _ = cispo.cispo_loss(lp, old, adv, mask, clip_low=0.2, clip_high=0.2)
    loss.backward()
    close(lp.grad, [[-1.2]])  # CISPO: −r̂·A = −1.2


def test_on_policy_cispo_has_ppos_gradient():
    # π_old = sg[π_θ] (a single-pass update): r = 1 everywhere, so both are −A·∇log π / N
    g = torch.Generator().manual_seed(7)
    for _ in range(20):
        lp = torch.randn(3, 5, generator=g, dtype=torch.float64) - 1
        adv = torch.randn(3, 5, generator=g, dtype=torch.float64)
        mask = (torch.rand(3, 5, generator=g) < 0.8).double()
        a, b = lp.clone().requires_grad_(True), lp.clone().requires_grad_(True)
        cispo.cispo_loss(a, a.detach(), adv, mask)[0].backward()
        core.policy_loss_clipped(b, b.detach(), adv, mask)[0].backward()
        close(a.grad, b.grad, tol=1e-12)


def test_is_weights_multiply_each_token():
    lp, old, adv, mask = three_tokens()
    loss, _ = cispo.cispo_loss(lp, old, adv, mask, is_weights=t([2.0, 1.0], [0.5, 0.0]))
    # (2·0.6 + 0.735759 + 0.5·(−0.331551)) / 3
    close(loss, (1.2 + 0.7357589 - 0.1657756) / 3)


def test_a_huge_log_ratio_gives_a_finite_loss():
    lp = t([[-1.0]], grad=True)
    loss, _ = cispo.cispo_loss(lp, t([[-1000.0]]), t([[1.0]]), t([[1]]), clip_high=math.inf)
    loss.backward()
    # r = e^999 is clamped to e^20 before the (here unbounded) cap: −e^20·1·(−1)
    close(loss, math.exp(core.LOG_RATIO_CLAMP), tol=1e-3)
    assert torch.isfinite(lp.grad).all()
