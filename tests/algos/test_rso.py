"""RSO: rejection sampling draws from π* ∝ π_sft·exp(r/β); pairs and labels of the accepted.

The distribution test is statistical: a Pearson chi-square test of the accepted samples'
histogram against π* over 20,000 prompts (fixed seed, so the outcome is deterministic). It must
not reject at p = 0.001; and, so that it can fail, the same test must reject (p < 1e-6) the raw
π_sft samples against π*, and the accepted samples against π_sft.
"""

from __future__ import annotations

import math

import pytest
import torch

from placerl.algos.rso import rank_pairs, statistical_rejection_sampling

PI_SFT = torch.tensor([0.10, 0.20, 0.30, 0.25, 0.15], dtype=torch.float64)
REWARD = torch.tensor([0.8, 0.6, 0.4, 0.2, 0.0], dtype=torch.float64)
BETA = 0.5
# π* ∝ π_sft·exp(r/β) ≈ [0.211, 0.283, 0.284, 0.159, 0.064]
PI_STAR = PI_SFT * torch.exp(REWARD / BETA) / (PI_SFT * torch.exp(REWARD / BETA)).sum()
DRAWS, CANDIDATES = 20_000, 128  # the best output (π_sft 0.1) is among 128 draws but w.p. 1e-6
P_ACCEPT = 1e-3  # false-alarm rate of the matching tests
P_REJECT = 1e-6


def chi_square_p_value(outcomes: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's goodness-of-fit p-value: P(χ²_{K−1} ≥ Σ (O − E)² / E)."""
    observed = torch.bincount(outcomes.reshape(-1), minlength=probs.numel()).double()
    expected = probs * observed.sum()
    stat = ((observed - expected) ** 2 / expected).sum()
    dof = probs.numel() - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0), stat / 2.0))


def candidates_and_accepted(num_accepted: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    candidates = torch.multinomial(PI_SFT.expand(DRAWS, -1), CANDIDATES, True, generator=g)
    scores = REWARD[candidates]  # (DRAWS, CANDIDATES)
    accepted = statistical_rejection_sampling(scores, num_accepted, BETA, g)
    return candidates, candidates.gather(1, accepted)


def test_chi_square_helper_matches_known_values():
    # χ²_1: P(X ≥ 3.841) = 0.05 ; χ²_4: P(X ≥ 9.488) = 0.05
    assert float(torch.special.gammaincc(torch.tensor(0.5), torch.tensor(3.841 / 2))) == (
        pytest.approx(0.05, abs=1e-4)
    )
    assert float(torch.special.gammaincc(torch.tensor(2.0), torch.tensor(9.488 / 2))) == (
        pytest.approx(0.05, abs=1e-4)
    )


@pytest.mark.parametrize("num_accepted", [1, 4])
def test_accepted_samples_follow_the_tilted_policy(num_accepted):
    candidates, accepted = candidates_and_accepted(num_accepted)
    assert chi_square_p_value(accepted, PI_STAR) > P_ACCEPT
    # controls: the test has the power to tell π_sft from π*, in both directions
    assert chi_square_p_value(candidates[:, :num_accepted], PI_STAR) < P_REJECT
    assert chi_square_p_value(accepted, PI_SFT) < P_REJECT
    assert chi_square_p_value(candidates[:, :num_accepted], PI_SFT) > P_ACCEPT


def test_small_beta_accepts_in_reward_order_one_per_round():
    scores = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    accepted = statistical_rejection_sampling(scores, 3, beta=1e-6)
    assert accepted.tolist() == [[1, 2, 0]]  # r_max recomputed over the remaining each round


def test_large_beta_accepts_the_first_k_candidates():
    scores = torch.tensor([[1.0, 3.0, 2.0, 0.0, 5.0]])
    accepted = statistical_rejection_sampling(scores, 3, beta=1e12)
    assert accepted.tolist() == [[0, 1, 2]]


def test_k_distinct_candidates_per_prompt_and_reproducible():
    scores = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    a = statistical_rejection_sampling(scores, 5, 0.3, torch.Generator().manual_seed(7))
    b = statistical_rejection_sampling(scores, 5, 0.3, torch.Generator().manual_seed(7))
    assert a.shape == (64, 5) and torch.equal(a, b)
    assert all(len(set(row)) == 5 for row in a.tolist())
    assert bool((a.max(-1).values < 8).all())
    # all N accepted: every candidate exactly once, whatever β
    full = statistical_rejection_sampling(scores, 8, 0.3, torch.Generator().manual_seed(7))
    assert sorted(full[0].tolist()) == list(range(8))


def test_best_candidate_is_always_accepted_when_k_is_one_and_beta_tiny():
    scores = torch.randn(32, 6, generator=torch.Generator().manual_seed(2))
    accepted = statistical_rejection_sampling(scores, 1, 1e-9, torch.Generator().manual_seed(0))
    assert torch.equal(accepted[:, 0], scores.argmax(-1))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_accepted"):
        statistical_rejection_sampling(torch.zeros(1, 3), 4, 1.0)
    with pytest.raises(ValueError, match="beta"):
        statistical_rejection_sampling(torch.zeros(1, 3), 2, 0.0)


# --- pairs -----------------------------------------------------------------------------------

SCORES = torch.tensor(
    [
        [0.0, 5.0, 1.0, 3.0, 9.0],  # prompt 0
        [2.0, 2.0, 7.0, 4.0, 1.0],  # prompt 1: candidates 0 and 1 tie
    ]
)


def test_first_round_pairs_consecutive_accepted_and_labels_by_reward():
    accepted = torch.tensor([[1, 2, 4, 3], [0, 1, 2, 3]])
    pairs = rank_pairs(accepted, SCORES, "first_round")
    # prompt 0: (1 vs 2) → 1 wins; (4 vs 3) → 4 wins. prompt 1: (0 vs 1) tie; (2 vs 3) → 2 wins
    assert pairs.chosen.tolist() == [1, 4, 5 + 2]
    assert pairs.rejected.tolist() == [2, 3, 5 + 3]
    assert pairs.ties == 1


def test_tournament_plays_until_one_winner_with_byes():
    accepted = torch.tensor([[1, 2, 4, 3, 0]])  # five players: 0 gets a bye in round one
    pairs = rank_pairs(accepted, SCORES[:1], "tournament")
    # round 1: (1,2) → 1, (4,3) → 4, bye 0 ; round 2: (1,4) → 4, bye 0 ; round 3: (4,0) → 4
    assert list(zip(pairs.chosen.tolist(), pairs.rejected.tolist(), strict=True)) == [
        (1, 2),
        (4, 3),
        (4, 1),
        (4, 0),
    ]
    assert len(pairs) == 5 - 1 and pairs.ties == 0


def test_tournament_tie_advances_the_first_and_is_not_a_pair():
    accepted = torch.tensor([[0, 1, 4, 3]])
    pairs = rank_pairs(accepted, SCORES[1:], "tournament")
    # (0,1) tie → 0 moves on ; (4,3): 3 wins (4 > 1) ; final (0,3): 3 wins (4 > 2)
    assert list(zip(pairs.chosen.tolist(), pairs.rejected.tolist(), strict=True)) == [
        (3, 4),
        (3, 0),
    ]
    assert pairs.ties == 1


def test_rejection_sampled_pairs_prefer_high_reward():
    """End to end on the toy policy: accepted pairs have a higher mean reward than π_sft's."""
    candidates, accepted = candidates_and_accepted(4)
    mean_accepted = float(REWARD[accepted].mean())
    assert mean_accepted > float((PI_SFT * REWARD).sum()) + 0.05
    assert mean_accepted == pytest.approx(float((PI_STAR * REWARD).sum()), abs=0.01)
    assert math.isfinite(mean_accepted)
