"""The KL users read (kl/k3) is never negative; kl/mean stays the k1 estimate (issue 21.6)."""

from __future__ import annotations

import pytest
import torch

from placerl.algos.kl import kl_metrics


@pytest.mark.parametrize("seed", range(200))
def test_the_shown_kl_is_never_negative_while_k1_can_be(seed):
    g = torch.Generator().manual_seed(seed)
    rows, width = 1 + seed % 7, 1 + seed % 11
    scale = [0.01, 1.0, 30.0][seed % 3]  # near π_ref, ordinary, far into k3's linear tail
    log_probs = -torch.rand(rows, width, generator=g) * scale
    ref = -torch.rand(rows, width, generator=g) * scale
    mask = (torch.rand(rows, width, generator=g) < 0.8).long()
    metrics = kl_metrics(log_probs, ref, mask)
    assert metrics["kl/k3"] >= 0.0
    k1 = ((log_probs - ref) * mask).sum(-1).mean()
    assert metrics["kl/mean"] == pytest.approx(float(k1), rel=1e-5, abs=1e-6)


def test_k1_mean_negative_where_k3_is_positive():
    # π puts less mass than π_ref on the sampled tokens: k1 < 0, the KL itself is not
    log_probs = torch.tensor([[-1.2, -0.9]])
    ref = torch.tensor([[-1.0, -0.8]])
    metrics = kl_metrics(log_probs, ref, torch.ones(1, 2, dtype=torch.long))
    assert metrics["kl/mean"] == pytest.approx(-0.3)
    d = log_probs - ref
    assert metrics["kl/k3"] == pytest.approx(float((torch.exp(-d) + d - 1).sum()))
    assert metrics["kl/k3"] > 0
