"""Pairs from sampled responses (online DPO's best-vs-worst) and the pair objective."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from placerl.algos.online_dpo import best_worst_pairs
from placerl.algos.pair_training import PairObjective, label_pairs, pair_batch
from placerl.algos.preference import preference_loss
from placerl.types import Field


def test_best_vs_worst_per_prompt_with_flat_indices():
    scores = torch.tensor([[0.2, 0.9, 0.1, 0.5], [3.0, 1.0, 2.0, 0.0]])
    pairs = best_worst_pairs(scores, 1)
    assert pairs.chosen.tolist() == [1, 4 + 0]
    assert pairs.rejected.tolist() == [2, 4 + 3]
    two = best_worst_pairs(scores, 2)  # then 2nd best vs 2nd worst
    assert two.chosen.tolist() == [1, 3, 4, 6]
    assert two.rejected.tolist() == [2, 0, 7, 5]


def test_ties_are_skipped_and_counted():
    scores = torch.tensor([[1.0, 1.0], [0.0, 2.0], [5.0, 5.0]])
    pairs = best_worst_pairs(scores, 1)
    assert pairs.chosen.tolist() == [3] and pairs.rejected.tolist() == [2]
    assert pairs.ties == 2 and len(pairs) == 1
    empty = label_pairs([(0, 1)], torch.tensor([1.0, 1.0]))
    assert len(empty) == 0 and empty.ties == 1 and empty.chosen.dtype == torch.long


def test_too_many_pairs_per_prompt_is_an_error():
    with pytest.raises(ValueError, match="pairs_per_prompt"):
        best_worst_pairs(torch.zeros(2, 3), 2)


def _batch() -> TensorDict:
    # 3 samples, 2 response tokens; sample 2's second token is padding
    return TensorDict(
        {
            Field.SCORES: torch.tensor([0.0, 1.0, 2.0]),
            Field.RESPONSE_MASK: torch.tensor([[1, 1], [1, 1], [1, 0]]),
            Field.REF_LOG_PROBS: torch.tensor([[-1.0, -1.0], [-2.0, -2.0], [-1.5, -7.0]]),
        },
        batch_size=[3],
    )


def test_pair_batch_puts_chosen_first():
    pairs = label_pairs([(0, 2), (1, 0)], _batch()[Field.SCORES])
    paired = pair_batch(_batch(), pairs)
    assert paired.batch_size == torch.Size([2, 2])
    assert paired[Field.SCORES].tolist() == [[2.0, 0.0], [1.0, 0.0]]


def test_pair_objective_is_the_preference_loss_of_sequence_log_probs():
    paired = pair_batch(_batch(), label_pairs([(0, 2), (1, 0)], _batch()[Field.SCORES]))
    policy = torch.tensor([[[-0.5, -0.5], [-1.0, -3.0]], [[-1.0, -1.0], [-1.0, -2.0]]])
    # pair 0 = (sample 2, sample 0), pair 1 = (sample 1, sample 0); sums over valid tokens
    mask = paired[Field.RESPONSE_MASK].bool()
    pol = torch.where(mask, policy, 0.0).sum(-1)
    ref = torch.where(mask, paired[Field.REF_LOG_PROBS], 0.0).sum(-1)
    assert pol.tolist() == [[-0.5, -4.0], [-2.0, -3.0]]  # the pad token's −0.5 is not counted
    expected, _ = preference_loss(
        pol[:, 0], pol[:, 1], ref[:, 0], ref[:, 1], kind="sigmoid", beta=0.5
    )
    loss, stats = PairObjective(kind="sigmoid", beta=0.5)(policy, paired)
    assert loss.item() == pytest.approx(expected.item())
    assert stats["loss/preference"].item() == pytest.approx(expected.item())
    # IPO averages per token: chosen of pair 0 has 1 valid token, rejected 2
    ipo, _ = PairObjective(kind="ipo", beta=0.5, average=True)(policy, paired)
    avg_p, avg_r = pol / mask.sum(-1), ref / mask.sum(-1)
    expected_ipo, _ = preference_loss(
        avg_p[:, 0], avg_p[:, 1], avg_r[:, 0], avg_r[:, 1], kind="ipo", beta=0.5
    )
    assert ipo.item() == pytest.approx(expected_ipo.item())
