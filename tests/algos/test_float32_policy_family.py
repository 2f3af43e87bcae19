"""Exact float32 math for GSPO, CISPO, REINFORCE++ and DAPO, over many random values.

The standard of ``test_float32_exact.py``: a group whose rewards are all equal carries no
signal and must come out as exactly 0 (not an ulp-sized leftover of a fixed sign), and the
filter that drops such groups must tell "equal" from "one ulp apart" for any float32 value.
"""

from __future__ import annotations

import pytest
import torch

from placerl.algos import dapo, gspo, reinforce_pp
from placerl.algos.dynamic_sampling import SignalGroups, groups_with_signal
from placerl.algos.registry import POLICY_LOSSES
from placerl.types import Field
from tests.algos.test_dynamic_sampling import sampled
from tests.algos.test_float32_exact import DRAWS, random_float32


def random_mask(g, rows, width):
    mask = (torch.rand(rows, width, generator=g) < 0.7).long()
    mask[:, 0] = 1
    return mask


def groups_of(g, k, groups, equal_share):
    """(groups·k,) float32 scores in groups of k, a random share of the groups all equal (each
    to its own random value, over the whole float32 range), and which groups are equal."""
    scores = random_float32(g, groups * k).clamp(-1e15, 1e15).view(groups, k)
    equal = torch.rand(groups, generator=g) < equal_share
    scores[equal] = scores[equal, :1].expand(-1, k)
    return scores.reshape(-1), equal


@pytest.mark.parametrize("k", [2, 3, 5, 8, 13, 16, 64])
def test_reinforce_pp_baseline_equal_groups_are_exactly_zero_before_normalisation(k):
    g = torch.Generator().manual_seed(31 + k)
    scores, equal = groups_of(g, k, groups=DRAWS // 4, equal_share=0.5)
    mask = random_mask(g, scores.numel(), 5)
    adv, ret = reinforce_pp.reinforce_pp_baseline_advantages(scores, mask, group_size=k)
    assert ret.dtype == torch.float32 and torch.isfinite(adv).all()
    ret = ret.view(-1, k, 5)
    assert torch.equal(ret[equal], torch.zeros_like(ret[equal])), ret[equal].abs().max()


@pytest.mark.parametrize("recenter", [True, False])
@pytest.mark.parametrize("k", [2, 3, 5, 8, 13, 16, 64])
def test_a_batch_without_signal_gets_exactly_zero_advantages(k, recenter):
    g = torch.Generator().manual_seed(37 + k)
    scores, _ = groups_of(g, k, groups=DRAWS // 4, equal_share=1.0)  # every group equal
    mask = random_mask(g, scores.numel(), 6)
    adv, _ = reinforce_pp.reinforce_pp_baseline_advantages(
        scores, mask, group_size=k, recenter=recenter
    )
    assert torch.equal(adv, torch.zeros_like(adv)), adv.abs().max()


def test_reinforce_pp_on_a_constant_batch_gives_exactly_zero():
    # no baseline, γ = 1, no KL: every return is the score, a constant, whitened to 0
    g = torch.Generator().manual_seed(39)
    for value in random_float32(g, DRAWS // 4).clamp(-1e15, 1e15).tolist():
        mask = random_mask(g, int(torch.randint(1, 9, (1,), generator=g)), 6)
        scores = torch.full((mask.shape[0],), value)
        adv, _ = reinforce_pp.reinforce_pp_advantages(scores, mask)
        assert torch.equal(adv, torch.zeros_like(adv)), (value, adv.abs().max())


def test_without_recentring_equal_groups_stay_zero_beside_groups_with_signal():
    g = torch.Generator().manual_seed(41)
    for k in range(2, 17):
        scores, equal = groups_of(g, k, groups=DRAWS // 16, equal_share=0.5)
        mask = random_mask(g, scores.numel(), 4)
        adv, _ = reinforce_pp.reinforce_pp_baseline_advantages(
            scores, mask, group_size=k, recenter=False
        )
        adv = adv.view(-1, k, 4)
        assert torch.isfinite(adv).all()
        assert torch.equal(adv[equal], torch.zeros_like(adv[equal]))


def test_the_filter_tells_equal_from_one_ulp_apart_for_any_value():
    g = torch.Generator().manual_seed(43)
    for i, value in enumerate(random_float32(g, DRAWS).tolist()):
        k = 2 + i % 63
        equal = torch.full((k,), value)
        apart = equal.clone()
        apart[int(torch.randint(0, k, (1,), generator=g))] = torch.nextafter(
            torch.tensor(value), torch.tensor(float("inf"))
        )
        both = torch.cat([equal, apart])
        assert groups_with_signal(both, k).tolist() == [False, True], (value, k)


def test_the_accumulator_never_keeps_a_group_without_signal():
    g = torch.Generator().manual_seed(47)
    for _ in range(50):
        k = int(torch.randint(2, 6, (1,), generator=g))
        acc = SignalGroups(target_groups=4, group_size=k, max_rounds=5)
        while not acc.done:
            groups = int(torch.randint(1, 5, (1,), generator=g))
            scores = random_float32(g, groups * k).view(groups, k)
            equal = torch.rand(groups, generator=g) < 0.6
            scores[equal] = scores[equal, :1].expand(-1, k)
            acc.add(sampled(scores.reshape(-1).tolist(), 2, 3, tag=1))
        kept = acc.batch()[Field.SCORES]
        assert groups_with_signal(kept, k).all()
        assert kept.numel() == acc.kept_groups * k


@pytest.mark.parametrize("name", ["gspo", "gspo_token", "cispo", "ppo_clip"])
def test_zero_advantages_give_exactly_zero_loss_and_gradient(name):
    g = torch.Generator().manual_seed(53)
    loss_fn = POLICY_LOSSES.get(name)
    for _ in range(100):
        rows = int(torch.randint(1, 6, (1,), generator=g))
        mask = random_mask(g, rows, 7)
        old = -torch.rand(rows, 7, generator=g) * 30
        lp = (old + torch.randn(rows, 7, generator=g)).requires_grad_(True)
        adv = torch.zeros(rows, 7)  # an equal-reward group under any group baseline
        loss, stats = loss_fn(
            lp, old, adv, mask, clip_low=0.2, clip_high=0.2, agg="token-mean",
            is_weights=None, norm=None,
        )  # fmt: skip
        loss.backward()
        assert loss.item() == 0.0, (name, loss)
        assert torch.equal(lp.grad.abs(), torch.zeros_like(lp.grad)), name
        assert all(torch.isfinite(v) for v in stats.values())


def test_gspo_ratio_is_exactly_one_on_policy():
    g = torch.Generator().manual_seed(59)
    for value in random_float32(g, DRAWS).clamp(-1e30, 0).tolist():
        lp = torch.full((2, 5), value).requires_grad_(True)
        mask = random_mask(g, 2, 5)
        log_s = gspo.sequence_log_ratio(lp, lp.detach(), mask)
        assert torch.equal(log_s, torch.zeros(2)), value
        w, _ = gspo.sequence_importance_weights(lp.detach(), lp.detach(), mask, cap=2.0)
        assert torch.equal(w, torch.ones(2)), value


def test_overlong_penalty_is_exact_at_the_band_ends_and_monotone():
    g = torch.Generator().manual_seed(61)
    for _ in range(200):
        max_length = int(torch.randint(1, 40000, (1,), generator=g))
        cache = int(torch.randint(1, max_length + 1, (1,), generator=g))
        lengths = torch.arange(0, max_length + 3)
        penalty = dapo.overlong_penalty(lengths, max_length, cache)
        start = max_length - cache
        assert torch.equal(penalty[: start + 1], torch.zeros(start + 1))
        assert torch.equal(penalty[max_length:], torch.full((3,), -1.0))
        assert (penalty[1:] <= penalty[:-1]).all() and (penalty >= -1).all()
