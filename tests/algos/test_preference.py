"""DPO / hinge / IPO losses and sequence log-probs against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from placerl.algos.preference import preference_loss, sequence_log_probs


def t(x):
    return torch.tensor(x, dtype=torch.float64)


# policy chosen -1, rejected -3 ; reference -2, -2
# h_c = -1 - (-2) = 1 ; h_r = -3 - (-2) = -1 ; logits = h_c - h_r = 2
CASE = (t([-1.0]), t([-3.0]), t([-2.0]), t([-2.0]))


def loss_of(kind, beta, **kw):
    loss, _ = preference_loss(*CASE, kind=kind, beta=beta, **kw)
    return loss.item()


def test_dpo_at_equal_policy_and_reference_is_log2():
    g = torch.Generator().manual_seed(0)
    ref_c, ref_r = torch.randn(4, generator=g), torch.randn(4, generator=g)
    for eps in (0.0, 0.3):  # σ(0) = ½ on both sides of the smoothing
        loss, stats = preference_loss(
            ref_c, ref_r, ref_c, ref_r, kind="sigmoid", beta=0.1, label_smoothing=eps
        )
        assert loss.item() == pytest.approx(math.log(2.0))
        assert stats["margin"].item() == 0.0


def test_sigmoid_hand_values():
    # β·logits = 0.5 * 2 = 1 ; -log σ(1) = log(1 + e^-1) = 0.3132617
    assert loss_of("sigmoid", 0.5) == pytest.approx(math.log1p(math.exp(-1)), abs=1e-9)
    # ε = 0.1: 0.9 * log(1 + e^-1) + 0.1 * log(1 + e^1) = 0.9 * 0.3132617 + 0.1 * 1.3132617
    expected = 0.9 * math.log1p(math.exp(-1)) + 0.1 * math.log1p(math.exp(1))
    assert loss_of("sigmoid", 0.5, label_smoothing=0.1) == pytest.approx(expected, abs=1e-9)


def test_hinge_hand_values():
    assert loss_of("hinge", 0.5) == pytest.approx(0.0)  # relu(1 - 0.5 * 2) = 0
    assert loss_of("hinge", 0.25) == pytest.approx(0.5)  # relu(1 - 0.25 * 2) = 0.5
    assert loss_of("hinge", 0.1) == pytest.approx(0.8)  # relu(1 - 0.2)


def test_ipo_hand_values():
    assert loss_of("ipo", 0.5) == pytest.approx(1.0)  # (2 - 1/(2*0.5))² = (2 - 1)²
    assert loss_of("ipo", 1.0) == pytest.approx(2.25)  # (2 - 0.5)²
    assert loss_of("ipo", 0.25) == pytest.approx(0.0)  # (2 - 2)²


def test_stats_and_batch_mean():
    # second pair is mis-ordered: h_c = -1 - 0 = -1, h_r = 0 - 0 = 0
    pc, pr, rc, rr = t([-1.0, -1.0]), t([-3.0, 0.0]), t([-2.0, 0.0]), t([-2.0, 0.0])
    loss, stats = preference_loss(pc, pr, rc, rr, kind="hinge", beta=0.5)
    # logits [2, -1] ; relu(1 - 1) = 0, relu(1 + 0.5) = 1.5 ; mean 0.75
    assert loss.item() == pytest.approx(0.75)
    # rewards β·h: chosen [0.5, -0.5] mean 0 ; rejected [-0.5, 0] mean -0.25
    assert stats["rewards_chosen"].item() == pytest.approx(0.0)
    assert stats["rewards_rejected"].item() == pytest.approx(-0.25)
    assert stats["reward_accuracy"].item() == pytest.approx(0.5)
    assert stats["margin"].item() == pytest.approx(0.25)  # (1 + -0.5) / 2


def test_loss_gradient_flows_to_policy_only():
    pc, pr = t([-1.0]).requires_grad_(), t([-3.0]).requires_grad_()
    loss, _ = preference_loss(pc, pr, t([-2.0]), t([-2.0]), kind="sigmoid", beta=0.5)
    loss.backward()
    # d/dpc of -log σ(β(pc - pr - 0)) = -β σ(-β·logits) = -0.5 σ(-1) = -0.5 / (1 + e)
    assert pc.grad.item() == pytest.approx(-0.5 / (1 + math.e))
    assert pr.grad.item() == pytest.approx(0.5 / (1 + math.e))


def test_bad_arguments():
    with pytest.raises(ValueError, match="sigmoid"):
        preference_loss(*CASE, kind="ipo", beta=0.1, label_smoothing=0.1)
    with pytest.raises(ValueError, match="'kto'"):
        preference_loss(*CASE, kind="kto", beta=0.1)


def test_sequence_log_probs_sum_and_average_skip_padding():
    lp = t([[-1.0, -2.0, float("nan")], [-0.5, -0.5, -0.5]])
    mask = t([[1, 1, 0], [1, 1, 1]])
    assert sequence_log_probs(lp, mask).tolist() == [-3.0, -1.5]  # -1 - 2 ; 3 * -0.5
    assert sequence_log_probs(lp, mask, average=True).tolist() == [-1.5, -0.5]


def test_slic_margin_moves_the_hinge():
    # logits 2: relu(δ − β·2) with β = 0.5 → relu(δ − 1)
    assert loss_of("hinge", 0.5, margin=3.0) == pytest.approx(2.0)
    assert loss_of("hinge", 0.5, margin=0.5) == pytest.approx(0.0)
    assert loss_of("hinge", 0.25, margin=2.0) == pytest.approx(1.5)  # relu(2 − 0.5)
    with pytest.raises(ValueError, match="hinge"):
        preference_loss(*CASE, kind="sigmoid", beta=0.1, margin=2.0)


def test_sft_regularizer_adds_weighted_chosen_nll():
    nll = t([0.7])
    base = loss_of("hinge", 0.25)  # 0.5
    loss, stats = preference_loss(*CASE, kind="hinge", beta=0.25, sft_coef=2.0, chosen_nll=nll)
    assert loss.item() == pytest.approx(base + 2.0 * 0.7)
    assert stats["sft_nll"].item() == pytest.approx(0.7)
    # batch mean of the NLL, weighted once: 0.5 + 0.1 * (1 + 3) / 2
    pc, pr, rc, rr = (x.repeat(2) for x in CASE)
    loss, _ = preference_loss(
        pc, pr, rc, rr, kind="hinge", beta=0.25, sft_coef=0.1, chosen_nll=t([1.0, 3.0])
    )
    assert loss.item() == pytest.approx(0.5 + 0.2)
    with pytest.raises(ValueError, match="chosen_nll"):
        preference_loss(*CASE, kind="sigmoid", beta=0.1, sft_coef=1.0)


def test_sft_regularizer_gradient_reaches_the_nll():
    nll = t([0.7]).requires_grad_()
    loss, _ = preference_loss(*CASE, kind="ipo", beta=0.5, sft_coef=0.3, chosen_nll=nll)
    loss.backward()
    assert nll.grad.item() == pytest.approx(0.3)


def test_config_loss_names_map_to_kinds():
    from placerl.algos.preference import LOSS_KINDS, PREFERENCE_KINDS

    assert LOSS_KINDS == {"dpo": "sigmoid", "slic": "hinge", "ipo": "ipo"}
    assert set(LOSS_KINDS.values()) == set(PREFERENCE_KINDS)
