"""RSO's rejection loop refuses non-finite rewards with a message, instead of spinning forever
(NaN or ±inf make every acceptance ratio NaN or 0, so no round would accept a candidate)."""

from __future__ import annotations

import threading

import pytest
import torch

from placerl.algos.rso import statistical_rejection_sampling


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_rewards_are_refused_not_looped_on(bad):
    scores = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]])
    scores[1, 2] = bad
    if bad == float("-inf"):
        scores[1] = bad  # a whole prompt at -inf: r_max - r is NaN for every candidate
    outcome: list[BaseException | torch.Tensor] = []

    def run():
        try:
            outcome.append(statistical_rejection_sampling(scores, 2, beta=0.5))
        except ValueError as err:
            outcome.append(err)

    worker = threading.Thread(target=run, daemon=True)  # a spinning loop must not hang pytest
    worker.start()
    worker.join(timeout=10)
    assert outcome, "the rejection loop never ended"
    assert isinstance(outcome[0], ValueError)
    assert "finite rewards" in str(outcome[0]) and "prompt 1" in str(outcome[0])
