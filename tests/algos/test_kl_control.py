"""KL controllers: direction of the adaptive update, hand values, exact resume."""

from __future__ import annotations

import pytest

from placerl.algos.kl_control import (
    AdaptiveKLController,
    FixedKLController,
    make_kl_controller,
)


def test_fixed_controller_never_moves_and_round_trips():
    ctl = FixedKLController(0.05)
    ctl.update(current_kl=100.0, n_steps=64)
    assert ctl.value == 0.05
    other = FixedKLController(1.0)
    other.load_state_dict(ctl.state_dict())
    assert other.value == 0.05


def test_adaptive_controller_hand_values():
    ctl = AdaptiveKLController(init_coef=0.1, target=6.0, horizon=10000)
    # KL 12: e = clip(12/6 - 1, ±0.2) = 0.2 ; β = 0.1 * (1 + 0.2 * 256/10000) = 0.1 * 1.00512
    ctl.update(current_kl=12.0, n_steps=256)
    assert ctl.value == pytest.approx(0.100512, abs=1e-12)
    ctl = AdaptiveKLController(init_coef=0.1, target=6.0, horizon=10000)
    # KL 3: e = clip(3/6 - 1 = -0.5) = -0.2 ; β = 0.1 * (1 - 0.00512) = 0.099488
    ctl.update(current_kl=3.0, n_steps=256)
    assert ctl.value == pytest.approx(0.099488, abs=1e-12)
    ctl = AdaptiveKLController(init_coef=0.1, target=6.0, horizon=100)
    # KL 6.6 inside the clip: e = 0.1 ; β = 0.1 * (1 + 0.1 * 10/100) = 0.101
    ctl.update(current_kl=6.6, n_steps=10)
    assert ctl.value == pytest.approx(0.101, abs=1e-12)


def test_adaptive_controller_moves_toward_target():
    ctl = AdaptiveKLController(init_coef=0.2, target=1.0, horizon=100)
    ctl.update(current_kl=1.5, n_steps=10)
    assert ctl.value > 0.2  # too much KL -> stronger penalty
    before = ctl.value
    ctl.update(current_kl=0.5, n_steps=10)
    assert ctl.value < before  # too little KL -> weaker penalty
    before = ctl.value
    ctl.update(current_kl=1.0, n_steps=10)
    assert ctl.value == before  # on target -> unchanged


def test_adaptive_controller_resumes_exactly_from_state_dict():
    kls = [3.1, 0.2, 7.7, 1.4, 2.9, 0.01]
    full = AdaptiveKLController(init_coef=0.05, target=2.0, horizon=37)
    for kl in kls:
        full.update(kl, n_steps=8)
    first = AdaptiveKLController(init_coef=0.05, target=2.0, horizon=37)
    for kl in kls[:3]:
        first.update(kl, n_steps=8)
    resumed = AdaptiveKLController(init_coef=123.0, target=9.0, horizon=1)
    resumed.load_state_dict(first.state_dict())
    for kl in kls[3:]:
        resumed.update(kl, n_steps=8)
    assert resumed.value == full.value  # bit-exact, not approx
    assert resumed.state_dict() == full.state_dict()


def test_make_kl_controller():
    assert isinstance(make_kl_controller("fixed", 0.1), FixedKLController)
    ctl = make_kl_controller("adaptive", 0.1, target=6.0, horizon=10000)
    assert isinstance(ctl, AdaptiveKLController) and ctl.value == 0.1
    with pytest.raises(ValueError, match="target"):
        make_kl_controller("adaptive", 0.1)
    with pytest.raises(ValueError, match="'pid'"):
        make_kl_controller("pid", 0.1)
