"""Per-token log-probabilities and entropy from logits, shared by sampling and training."""

from __future__ import annotations

import torch


def log_probs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(labels) under softmax(logits); (..., V), (...) -> (...).

    Gathers before normalizing (logit - logsumexp) so no (..., V) log-softmax tensor is kept
    for backward beyond the one logsumexp needs.
    """
    picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last dimension; (..., V) -> (...)."""
    log_p = torch.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(-1)
