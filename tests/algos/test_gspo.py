"""GSPO and GSPO-token against hand-computed numbers (arithmetic in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from placerl.algos import core, gspo

NAN = float("nan")


def t(*rows, grad=False):
    x = torch.tensor(rows if len(rows) > 1 else rows[0], dtype=torch.float64)
    return x.requires_grad_(grad)


def close(a, b, tol=1e-6):
    b = torch.as_tensor(b, dtype=torch.float64)
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64), b, atol=tol, rtol=0)


def two_rows():
    """Row 0: two tokens, log-ratios 0.1 and −0.3; row 1: one token, log-ratio 0.5, padding NaN."""
    lp = t([-1.0, -2.0], [-0.5, NAN], grad=True)
    old = t([-1.1, -1.7], [-1.0, NAN])
    mask = t([1, 1], [1, 0])
    adv = t([1.0, 1.0], [-2.0, NAN])  # one advantage per sequence, broadcast
    return lp, old, adv, mask


def test_gspo_hand_values_and_gradient():
    lp, old, adv, mask = two_rows()
    loss, stats = gspo.gspo_loss(lp, old, adv, mask, clip_low=0.2, clip_high=0.2)
    # row 0: log s = (0.1 − 0.3) / 2 = −0.1, s = e^−0.1 = 0.904837, inside [0.8, 1.2]
    #        loss_0 = max(−1·0.904837, −1·0.904837) = −0.904837
    # row 1: log s = 0.5, s = e^0.5 = 1.648721, A = −2
    #        unclipped −A·s = 3.297443, clipped −A·1.2 = 2.4 -> max 3.297443 (not clipped)
    # seq-mean-token-mean: (−0.904837 + 3.297443) / 2 = 1.196303
    close(loss, 1.1963026)
    loss.backward()
    # ∂loss_0/∂lp_t = −A·s·(1/|y|) = −0.904837 / 2 = −0.452419, then / 2 sequences = −0.226209
    # ∂loss_1/∂lp = −A·s = 3.297443, / 2 sequences = 1.648721; padding gets 0 (not NaN)
    close(lp.grad, [[-0.2262094, -0.2262094], [1.6487213, 0.0]])
    close(stats["clip_frac"], 0.0)
    close(stats["ratio_mean"], (0.9048374 + 1.6487213) / 2)


def test_gspo_token_mean_weighs_sequences_by_length():
    lp, old, adv, mask = two_rows()
    loss, _ = gspo.gspo_loss(lp, old, adv, mask, clip_low=0.2, clip_high=0.2, agg="token-mean")
    # (2·(−0.904837) + 3.297443) / 3 tokens = 0.495923
    close(loss, 0.4959226)
    loss.backward()
    # row 0: 2 of 3 tokens carry loss_0: (2/3)·(−0.904837 / 2) = −0.301612; row 1: 3.297443 / 3
    close(lp.grad, [[-0.3016125, -0.3016125], [1.0991475, 0.0]])


def test_gspo_paper_clip_range_clips_whole_sequences():
    # four one-token sequences, log-ratios ±0.001, so s = e^±0.001 = 1.0010005 / 0.9990005;
    # paper range [1 − 3e-4, 1 + 4e-4] = [0.9997, 1.0004]
    lp = t([0.001], [0.001], [-0.001], [-0.001], grad=True)
    old = t([0.0], [0.0], [0.0], [0.0])
    adv = t([1.0], [-1.0], [1.0], [-1.0])
    loss, stats = gspo.gspo_loss(lp, old, adv, torch.ones(4, 1))
    # A=+1, s=1.0010005: min(s, 1.0004) -> clipped, loss −1.0004, no gradient
    # A=−1, s=1.0010005: max(s, 1.0004) = s -> unclipped, loss 1.0010005
    # A=+1, s=0.9990005: min(s, 0.9997) = s -> unclipped, loss −0.9990005
    # A=−1, s=0.9990005: max(s, 0.9997) = 0.9997 -> clipped, no gradient
    s_hi, s_lo = math.exp(0.001), math.exp(-0.001)
    close(loss, (-1.0004 + s_hi - s_lo + 0.9997) / 4, tol=1e-9)
    loss.backward()
    close(lp.grad, [[0.0], [s_hi / 4], [-s_lo / 4], [0.0]], tol=1e-9)
    close(stats["clip_frac"], 0.5)
    assert gspo.GSPO_CLIP_LOW == 3e-4 and gspo.GSPO_CLIP_HIGH == 4e-4


def test_gspo_token_gives_each_token_its_own_advantage():
    # one row, log-ratios 0.2 and 0.0: s = e^0.1 = 1.105171; advantages +1 and −1, clip 0.2
    lp = t([[-1.0, -2.0]], grad=True)
    old = t([[-1.2, -2.0]])
    adv = t([[1.0, -1.0]])
    mask = t([[1, 1]])
    loss, _ = gspo.gspo_token_loss(lp, old, adv, mask, clip_low=0.2, clip_high=0.2)
    # token 0: −1·1.105171; token 1: +1·1.105171 -> mean over the sequence 0
    close(loss, 0.0)
    loss.backward()
    # s_t = sg[s]·π_t/sg[π_t]: ∂/∂lp_t = −A_t·s / |y| = ∓1.105171 / 2 = ∓0.552585
    close(lp.grad, [[-0.5525855, 0.5525855]])
    # sequence GSPO sees only the row's mean advantage, 0: no loss and no gradient
    lp2 = lp.detach().clone().requires_grad_(True)
    loss2, _ = gspo.gspo_loss(lp2, old, adv, mask, clip_low=0.2, clip_high=0.2)
    loss2.backward()
    close(loss2, 0.0)
    close(lp2.grad, [[0.0, 0.0]])


@pytest.mark.parametrize("agg", core.AGG_MODES)
def test_gspo_token_equals_gspo_for_sequence_advantages_in_value_and_gradient(agg):
    g = torch.Generator().manual_seed(23)
    for _ in range(50):
        rows, width = int(torch.randint(1, 7, (1,), generator=g)), 6
        mask = (torch.rand(rows, width, generator=g) < 0.7).double()
        mask[:, 0] = 1
        old = torch.randn(rows, width, generator=g, dtype=torch.float64) - 2
        lp = old + 0.05 * torch.randn(rows, width, generator=g, dtype=torch.float64)
        lp = torch.where(mask.bool(), lp, torch.full_like(lp, NAN))  # padding is never read
        seq_adv = torch.randn(rows, generator=g, dtype=torch.float64)
        adv = core.expand_to_tokens(seq_adv, mask)
        weights = torch.rand(rows, generator=g, dtype=torch.float64) + 0.5
        for is_weights in (None, weights):
            a, b = lp.clone().requires_grad_(True), lp.clone().requires_grad_(True)
            kw = dict(clip_low=0.02, clip_high=0.03, agg=agg, is_weights=is_weights, norm=8)
            loss_a, stats_a = gspo.gspo_loss(a, old, adv, mask, **kw)
            loss_b, stats_b = gspo.gspo_token_loss(b, old, adv, mask, **kw)
            loss_a.backward()
            loss_b.backward()
            close(loss_a, loss_b, tol=1e-12)
            close(a.grad, b.grad, tol=1e-12)
            close(stats_a["clip_frac"], stats_b["clip_frac"], tol=1e-12)


def test_sequence_importance_weights_are_truncated_geometric_means():
    old = t([-1.0, -2.0], [-0.5, NAN])
    rollout = t([-1.2, -2.4], [-1.5, NAN])
    mask = t([1, 1], [1, 0])
    w, stats = gspo.sequence_importance_weights(old, rollout, mask, cap=2.0)
    # row 0: log ρ = 0.2, 0.4 -> mean 0.3 -> e^0.3 = 1.349859 (the geometric mean of e^0.2, e^0.4)
    # row 1: log ρ = 1.0 -> e^1 = 2.718282, truncated to the cap 2
    close(w, [1.3498588, 2.0])
    close(stats["is_weight_mean"], (1.3498588 + 2.0) / 2)
    close(stats["is_trunc_frac"], 0.5)
    close(stats["is_log_ratio_abs_mean"], (0.2 + 0.4 + 1.0) / 3)
    close(stats["is_log_ratio_abs_max"], 1.0)
    with pytest.raises(ValueError, match="cap"):
        gspo.sequence_importance_weights(old, rollout, mask, cap=0.0)


def test_sequence_is_weights_scale_each_sequence_loss():
    lp, old, adv, mask = two_rows()
    loss, _ = gspo.gspo_loss(
        lp, old, adv, mask, clip_low=0.2, clip_high=0.2, is_weights=t([0.5, 2.0])
    )
    # (0.5·(−0.904837) + 2·3.297443) / 2 = 3.071233
    close(loss, (0.5 * -0.9048374 + 2 * 3.2974425) / 2)


def test_a_clamped_sequence_has_a_finite_loss_and_no_gradient_in_both_variants():
    lp = t([[30.0, 20.0]], grad=True)  # log s = 25 > LOG_RATIO_CLAMP = 20
    old, adv, mask = t([[0.0, 0.0]]), t([[-1.0, -1.0]]), t([[1, 1]])
    for loss_fn in (gspo.gspo_loss, gspo.gspo_token_loss):
        lp.grad = None
        loss, _ = loss_fn(lp, old, adv, mask)
        loss.backward()
        close(loss, math.exp(core.LOG_RATIO_CLAMP), tol=1e-3)  # −A·e^20, finite
        close(lp.grad, [[0.0, 0.0]])
