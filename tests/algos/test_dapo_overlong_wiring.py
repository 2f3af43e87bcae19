"""DAPO's overlong handling as the dapo stage runs it (``OverlongShaping`` inside
``GroupPolicyOptimization.learn``), against hand-computed numbers: which rows count as cut, the
penalty added to the scores, the group advantages of the shaped scores, and the loss mask the
update sees with ``filter_truncated`` — while SCORES (the task reward, which the dynamic-sampling
filter and ``reward/mean`` read) stay as they were."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from tensordict import TensorDict

from placerl.algos.dapo import OverlongShaping
from placerl.algos.grpo import GroupPolicyOptimization
from placerl.config.policy import GRPOConfig
from placerl.timing import PhaseTimer
from placerl.types import Field

END = 9  # the end token


def _batch() -> TensorDict:
    """One group of 4 responses, budget L_max = 4 tokens:
    row 0: 2 tokens, ends         row 1: 3 tokens, ends
    row 2: 4 tokens, ends (at L_max, not cut)   row 3: 4 tokens, no end token (cut)."""
    ids = torch.tensor([[5, END, 0, 0], [5, 6, END, 0], [5, 6, 7, END], [5, 6, 7, 8]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]]).float()
    return TensorDict(
        {
            Field.RESPONSE_IDS: ids,
            Field.RESPONSE_MASK: mask,
            Field.ATTENTION_MASK: torch.ones(4, 6),
            Field.SCORES: torch.tensor([1.0, 1.0, 1.0, 0.0]),
            Field.OLD_LOG_PROBS: torch.zeros(4, 4),
        },
        batch_size=[4],
    )


def _shaping(**kw) -> OverlongShaping:
    return OverlongShaping(max_length=4, cache_length=2, end_token_ids=(END,), **kw)


def test_cut_rows_and_shaped_scores_by_hand():
    batch = _batch()
    assert _shaping().truncated(batch).tolist() == [False, False, False, True]
    # band after 4 − 2 = 2 tokens: 2 -> 0; 3 -> (2 − 3) / 2 = −0.5; 4 (ended) -> −1; cut -> −1
    scores, metrics = _shaping().shaped_scores(batch)
    assert scores.tolist() == [1.0, 0.5, 0.0, -1.0]
    assert metrics == {"response/truncated_share": 0.25, "reward/overlong_penalty": -0.625}
    half, _ = _shaping(penalty_factor=0.5).shaped_scores(batch)
    assert half.tolist() == [1.0, 0.75, 0.5, -0.5]
    off, metrics = _shaping(shaping=False).shaped_scores(batch)
    assert off.tolist() == [1.0, 1.0, 1.0, 0.0] and "reward/overlong_penalty" not in metrics
    assert batch[Field.SCORES].tolist() == [1.0, 1.0, 1.0, 0.0]  # the task reward is kept


class _Actor:
    def update(self, batch, objective, epochs, minibatches):
        self.batch = batch
        return {}


@pytest.mark.parametrize("filter_truncated", [False, True])
def test_learn_gives_the_shaped_advantages_and_masks_cut_rows(filter_truncated):
    algo = GroupPolicyOptimization(
        GRPOConfig(), "grpo", 4, overlong=_shaping(filter_truncated=filter_truncated)
    )
    roles = SimpleNamespace(actor=_Actor())
    batch = _batch()
    metrics = algo.learn(roles, batch, PhaseTimer(), step=1)
    # shaped scores 1, 0.5, 0, −1: mean 0.125, deviations 0.875, 0.375, −0.125, −1.125,
    # unbiased std √(2.1875 / 3) = 0.853913
    std = math.sqrt(2.1875 / 3) + 1e-6
    expected = [0.875 / std, 0.375 / std, -0.125 / std, -1.125 / std]
    seen = roles.actor.batch
    adv = seen[Field.ADVANTAGES]
    for row in range(4):
        assert adv[row, 0].item() == pytest.approx(expected[row], rel=1e-6)
    assert (adv * (1 - batch[Field.RESPONSE_MASK]) == 0).all()  # only on response tokens
    assert metrics["reward/mean"] == 0.75  # the task reward, not the shaped one
    assert metrics["reward/overlong_penalty"] == -0.625
    assert metrics["reward/groups_with_signal"] == 1.0
    cut_row = seen[Field.RESPONSE_MASK][3].tolist()
    assert cut_row == ([0.0] * 4 if filter_truncated else [1.0] * 4)
    assert seen[Field.RESPONSE_MASK][:3].equal(batch[Field.RESPONSE_MASK][:3])
    assert batch[Field.RESPONSE_MASK][3].tolist() == [1.0] * 4  # the batch itself is intact
