"""Core RLHF math against hand-computed numbers (arithmetic in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from placerl.algos import core
from placerl.algos.kl import kl_estimate, token_rewards_from_scores
from placerl.algos.registry import ADVANTAGE_ESTIMATORS, POLICY_LOSSES, Registry

NAN = float("nan")


def t(*rows):
    return torch.tensor(rows if len(rows) > 1 else rows[0], dtype=torch.float64)


def close(a, b, tol=1e-6):
    b = torch.as_tensor(b, dtype=torch.float64)
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64), b, atol=tol, rtol=0)


# ---------------------------------------------------------------------------- masked stats


def test_masked_stats_hand_values_and_padding_not_read():
    x = t([1.0, 2.0, NAN], [3.0, 4.0, NAN])
    m = t([1, 1, 0], [1, 1, 0])
    close(core.masked_sum(x, m), 10.0)  # 1 + 2 + 3 + 4
    close(core.masked_mean(x, m), 2.5)  # 10 / 4
    close(core.masked_mean(x, m, dim=1), [1.5, 3.5])
    # deviations -1.5, -0.5, 0.5, 1.5 -> squares 2.25 + 0.25 + 0.25 + 2.25 = 5
    close(core.masked_var(x, m, unbiased=False), 1.25)  # 5 / 4
    close(core.masked_var(x, m, unbiased=True), 5 / 3)  # 5 / (4 - 1)


def test_masked_mean_of_empty_mask_is_zero():
    close(core.masked_mean(t([1.0, 2.0]), t([0, 0])), 0.0)


def test_masked_whiten_hand_value_and_zero_on_padding():
    x = t([1.0, 2.0, 3.0, 99.0])
    m = t([1, 1, 1, 0])
    # mean 2, unbiased var ((1 + 0 + 1) / 2) = 1 -> (x - 2) / 1
    close(core.masked_whiten(x, m), [-1.0, 0.0, 1.0, 0.0])
    # shift_mean=False adds the mean back on valid tokens
    close(core.masked_whiten(x, m, shift_mean=False), [1.0, 2.0, 3.0, 0.0])


def test_masked_whiten_gives_mean_zero_std_one_over_valid_tokens():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 7, generator=g, dtype=torch.float64) * 3 + 5
    m = (torch.rand(4, 7, generator=g) > 0.3).double()
    w = core.masked_whiten(x, m)
    close(core.masked_mean(w, m), 0.0)
    close(core.masked_var(w, m).sqrt(), 1.0)
    assert torch.all(w[m == 0] == 0)


# ---------------------------------------------------------------------------------- GAE


def test_gae_hand_values_two_rows_of_different_length():
    rewards = t([0.0, 0.0, 1.0], [0.0, 2.0, NAN])
    values = t([0.5, 0.6, 0.7], [1.0, 1.0, NAN])
    mask = t([1, 1, 1], [1, 1, 0])
    adv, ret = core.compute_gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # row 0: t=2 δ = 1 + 0 - 0.7 = 0.3, A = 0.3
    #        t=1 δ = 0 + 0.7 - 0.6 = 0.1, A = 0.1 + 0.5 * 0.3 = 0.25
    #        t=0 δ = 0 + 0.6 - 0.5 = 0.1, A = 0.1 + 0.5 * 0.25 = 0.225
    # row 1: t=1 δ = 2 + 0 - 1 = 1, A = 1 ; t=0 δ = 0 + 1 - 1 = 0, A = 0 + 0.5 * 1 = 0.5
    close(adv, [[0.225, 0.25, 0.3], [0.5, 1.0, 0.0]])
    close(ret, [[0.725, 0.85, 1.0], [1.5, 2.0, 0.0]])  # A + V, 0 on padding


def test_gae_with_discount():
    # γ = 0.5, λ = 1, V = 0: A_1 = 2 ; A_0 = 1 + 0.5 * 2 = 2 (discounted reward-to-go)
    adv, ret = core.compute_gae(t([[1.0, 2.0]]), t([[0.0, 0.0]]), t([[1, 1]]), 0.5, 1.0)
    close(adv, [[2.0, 2.0]])
    close(ret, [[2.0, 2.0]])


def test_gae_lam1_gamma1_is_reward_to_go_minus_value():
    g = torch.Generator().manual_seed(1)
    r = torch.randn(3, 6, generator=g, dtype=torch.float64)
    v = torch.randn(3, 6, generator=g, dtype=torch.float64)
    mask = t([1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0])
    adv, ret = core.compute_gae(r, v, mask, gamma=1.0, lam=1.0)
    rtg = (r * mask).flip(1).cumsum(1).flip(1)  # Σ_{k >= t} r_k over valid tokens
    close(adv, (rtg - v) * mask)
    close(ret, rtg * mask)


def test_gae_skips_interior_masked_tokens():
    # e.g. tool output inside a response: token 1 is masked and skipped, γ = 1, λ = 0.5
    adv, ret = core.compute_gae(t([[0.0, NAN, 1.0]]), t([[0.5, NAN, 0.7]]), t([[1, 0, 1]]), 1, 0.5)
    # t=2: δ = 1 - 0.7 = 0.3, A = 0.3 ; t=1 skipped (A, next V carried)
    # t=0: δ = 0 + 0.7 - 0.5 = 0.2, A = 0.2 + 0.5 * 0.3 = 0.35
    close(adv, [[0.35, 0.0, 0.3]])
    close(ret, [[0.85, 0.0, 1.0]])


def test_gae_ignores_padding():
    r, v = t([[0.3, -1.0, 2.0]]), t([[0.1, 0.4, -0.2]])
    adv, ret = core.compute_gae(r, v, t([[1, 1, 1]]), gamma=0.9, lam=0.8)
    # the same row padded with garbage (NaN, huge) gives the same numbers on its 3 tokens
    r_pad, v_pad = t([[0.3, -1.0, 2.0, NAN, 1e9]]), t([[0.1, 0.4, -0.2, 1e9, NAN]])
    adv_p, ret_p = core.compute_gae(r_pad, v_pad, t([[1, 1, 1, 0, 0]]), gamma=0.9, lam=0.8)
    close(adv_p[:, :3], adv)
    close(ret_p[:, :3], ret)
    close(adv_p[:, 3:], [[0.0, 0.0]])
    close(ret_p[:, 3:], [[0.0, 0.0]])


# ---------------------------------------------------------------------- outcome advantages


def test_grpo_advantages_hand_values():
    scores = t([1.0, 2.0, 3.0, 0.0, 0.0, 6.0])
    # group 0: mean 2, unbiased std sqrt((1 + 0 + 1) / 2) = 1 -> [-1, 0, 1]
    # group 1: mean 2, deviations [-2, -2, 4], var (4 + 4 + 16) / 2 = 12, std = sqrt(12)
    s12 = math.sqrt(12.0)
    close(core.grpo_advantages(scores, 3, eps=0.0), [-1, 0, 1, -2 / s12, -2 / s12, 4 / s12])
    close(core.grpo_advantages(scores, 3, scale_by_std=False), [-1, 0, 1, -2, -2, 4])


def test_grpo_advantages_sum_to_zero_per_group_and_constant_group_is_zero():
    g = torch.Generator().manual_seed(2)
    scores = torch.cat([torch.randn(8, generator=g, dtype=torch.float64), t([1.0] * 4)])
    adv = core.grpo_advantages(scores, 4)
    close(adv.view(3, 4).sum(1), [0.0, 0.0, 0.0])
    close(adv[8:], [0.0] * 4)  # all-equal group: 0 / (0 + eps) = 0, not NaN


def test_rloo_advantages_hand_values_and_formula():
    # [1, 2, 3]: 1 - (2 + 3) / 2 = -1.5 ; 2 - (1 + 3) / 2 = 0 ; 3 - (1 + 2) / 2 = 1.5
    close(core.rloo_advantages(t([1.0, 2.0, 3.0]), 3), [-1.5, 0.0, 1.5])
    g = torch.Generator().manual_seed(3)
    s = torch.randn(2, 5, generator=g, dtype=torch.float64)
    expected = torch.stack(
        [s[i, j] - (s[i].sum() - s[i, j]) / 4 for i in range(2) for j in range(5)]
    )
    close(core.rloo_advantages(s.reshape(-1), 5), expected)


@pytest.mark.parametrize("fn", [core.grpo_advantages, core.rloo_advantages])
def test_group_size_must_divide_and_be_at_least_two(fn):
    with pytest.raises(ValueError, match="group_size"):
        fn(t([1.0, 2.0, 3.0]), 2)
    with pytest.raises(ValueError, match="group_size"):
        fn(t([1.0, 2.0]), 1)


def test_expand_to_tokens_with_int64_mask():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])  # int64, as Field.RESPONSE_MASK
    close(core.expand_to_tokens(t([2.0, -1.0]), mask), [[2, 2, 0], [-1, 0, 0]])


# ------------------------------------------------------------------------------------ KL


def test_kl_estimate_hand_values():
    logp, ref = t([-1.0, -2.0, -5.0]), t([-2.0, -1.0, 0.0])
    mask = t([1, 1, 0])
    e = math.e
    # d = logp - ref = [1, -1, (masked)]
    close(kl_estimate(logp, ref, "k1", mask), [1.0, -1.0, 0.0])
    close(kl_estimate(logp, ref, "k2", mask), [0.5, 0.5, 0.0])  # ½ d²
    # k3 = exp(ref - logp) - (ref - logp) - 1: e^-1 + 1 - 1 ; e^1 - 1 - 1
    close(kl_estimate(logp, ref, "k3", mask), [1 / e, e - 2, 0.0])
    close(kl_estimate(logp, ref, "abs", mask), [1.0, 1.0, 0.0])
    close(kl_estimate(logp, ref, "k1"), [1.0, -1.0, -5.0])  # no mask: all positions
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(logp, ref, "k4")


def test_token_rewards_from_scores():
    scores = t([1.0, 2.0, 5.0])
    mask = t([1, 1, 1], [1, 1, 0], [0, 0, 0])
    kl = t([0.1, 0.2, 0.3], [0.4, 0.5, NAN], [1.0, 1.0, 1.0])
    # -0.5 * kl on valid tokens, + score at each row's last valid token; empty row gets nothing
    # row 0: [-0.05, -0.1, -0.15 + 1] ; row 1: [-0.2, -0.25 + 2, 0]
    expected = [[-0.05, -0.1, 0.85], [-0.2, 1.75, 0.0], [0.0, 0.0, 0.0]]
    close(token_rewards_from_scores(scores, mask, kl, 0.5), expected)
    no_kl = [[0.0, 0.0, 1.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]
    close(token_rewards_from_scores(scores, mask, None, 0.5), no_kl)


# --------------------------------------------------------------------------- aggregation


def test_aggregate_loss_modes():
    loss = t([1.0, 2.0, 3.0], [4.0, NAN, NAN], [7.0, 7.0, 7.0])
    mask = t([1, 1, 1], [1, 0, 0], [0, 0, 0])  # last row empty: left out of seq-means
    close(core.aggregate_loss(loss, mask, "token-mean"), 2.5)  # (1+2+3+4) / 4
    close(core.aggregate_loss(loss, mask, "seq-mean-token-mean"), 3.0)  # (2 + 4) / 2
    close(core.aggregate_loss(loss, mask, "seq-mean-token-sum"), 5.0)  # (6 + 4) / 2
    close(core.aggregate_loss(loss, mask, "seq-mean-token-sum-norm"), 10 / 6)  # (6/3 + 4/3) / 2
    close(core.aggregate_loss(loss, mask, "seq-mean-token-sum-norm", norm=10.0), 0.5)
    with pytest.raises(ValueError, match="token-sum-mean"):
        core.aggregate_loss(loss, mask, "token-sum-mean")


# ---------------------------------------------------------------------------- PPO losses


def _ppo_case():
    # four tokens: ratios 1.5, 0.5, 0.5, 1.5 with advantages +1, +1, -1, -1
    old = t([[0.0, 0.0, 0.0, 0.0, 0.0]])
    ratios = [1.5, 0.5, 0.5, 1.5, 1.0]
    logp = torch.log(t([ratios])).requires_grad_()
    adv = t([[1.0, 1.0, -1.0, -1.0, 123.0]])
    mask = t([[1, 1, 1, 1, 0]])
    return logp, old, adv, mask


def test_policy_loss_clipped_hand_values():
    logp, old, adv, mask = _ppo_case()
    loss, stats = core.policy_loss_clipped(logp, old, adv, mask)
    # token: max(-Aρ, -A clip(ρ, 0.8, 1.2))
    #  ρ=1.5, A=+1: max(-1.5, -1.2) = -1.2  clipped
    #  ρ=0.5, A=+1: max(-0.5, -0.8) = -0.5
    #  ρ=0.5, A=-1: max( 0.5,  0.8) =  0.8  clipped
    #  ρ=1.5, A=-1: max( 1.5,  1.2) =  1.5
    close(loss.detach(), (-1.2 - 0.5 + 0.8 + 1.5) / 4)  # 0.15
    close(stats["clip_frac"], 0.5)
    close(stats["ratio_mean"], 1.0)  # (1.5 + 0.5 + 0.5 + 1.5) / 4
    # k3(old‖new) = ρ - 1 - log ρ: 0.5 - log 1.5 (twice), -0.5 + log 2 (twice)
    close(stats["approx_kl"], (2 * (0.5 - math.log(1.5)) + 2 * (-0.5 + math.log(2))) / 4)
    # clipped tokens carry no gradient; d(-Aρ)/d logp = -Aρ / 4 on the others
    loss.backward()
    close(logp.grad, [[0.0, -0.5 / 4, 0.0, 1.5 / 4, 0.0]])


def test_policy_loss_asymmetric_clip_dual_clip_and_is_weights():
    logp, old, adv, mask = _ppo_case()
    # clip-higher 0.28: first token max(-1.5, -1.28) = -1.28
    loss, _ = core.policy_loss_clipped(logp, old, adv, mask, clip_high=0.28)
    close(loss.detach(), (-1.28 - 0.5 + 0.8 + 1.5) / 4)
    # dual clip c = 1.4: A<0 tokens capped at -A·c = 1.4 -> 1.5 becomes 1.4 ; 0.8 stays
    loss, stats = core.policy_loss_clipped(logp, old, adv, mask, ratio_cap=1.4)
    close(loss.detach(), (-1.2 - 0.5 + 0.8 + 1.4) / 4)
    close(stats["dual_clip_frac"], 0.25)
    # importance weights [2, 1, 1, 0.5]: (-2.4 - 0.5 + 0.8 + 0.75) / 4
    w = t([[2.0, 1.0, 1.0, 0.5, NAN]])
    loss, _ = core.policy_loss_clipped(logp, old, adv, mask, is_weights=w)
    close(loss.detach(), (-2.4 - 0.5 + 0.8 + 0.75) / 4)


def test_policy_loss_at_ratio_one_is_minus_mean_advantage():
    g = torch.Generator().manual_seed(4)
    logp = torch.randn(3, 5, generator=g, dtype=torch.float64)
    adv = torch.randn(3, 5, generator=g, dtype=torch.float64)
    mask = t([1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0])
    loss, stats = core.policy_loss_clipped(logp, logp.clone(), adv, mask)
    close(loss, -core.masked_mean(adv, mask))
    close(stats["clip_frac"], 0.0)
    close(stats["approx_kl"], 0.0)


def test_value_loss_clipped_hand_values():
    values = t([[1.0, 2.0, 5.0]])
    old, returns, mask = t([[1.0, 1.0, NAN]]), t([[0.0, 3.0, NAN]]), t([[1, 1, 0]])
    loss, stats = core.value_loss_clipped(values, old, returns, mask, clip=0.2)
    # token 0: (1 - 0)² = 1, clipped V = 1 -> 1 ; max 1 (not clipped)
    # token 1: (2 - 3)² = 1, clipped V = 1.2 -> (1.2 - 3)² = 3.24 ; max 3.24 (clipped)
    close(loss, 0.5 * (1.0 + 3.24) / 2)  # 1.06
    close(stats["vf_clip_frac"], 0.5)
    loss, stats = core.value_loss_clipped(values, old, returns, mask, clip=None)
    close(loss, 0.5 * (1.0 + 1.0) / 2)
    close(stats["vf_clip_frac"], 0.0)


# ------------------------------------------------------------------------------ registry


def test_registry_lookup_and_errors():
    assert ADVANTAGE_ESTIMATORS.get("grpo") is core.grpo_advantages
    assert ADVANTAGE_ESTIMATORS.get("rloo") is core.rloo_advantages
    assert POLICY_LOSSES.get("ppo_clip") is core.policy_loss_clipped
    with pytest.raises(KeyError, match="known: grpo, rloo"):
        ADVANTAGE_ESTIMATORS.get("gea")
    reg: Registry = Registry("thing")
    reg.register("a")(len)
    assert "a" in reg and reg.names() == ["a"]
    with pytest.raises(KeyError, match="already registered"):
        reg.register("a")(len)
