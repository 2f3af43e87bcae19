"""Leaving zero-signal samples out of the policy update without changing the gradient.

In GRPO/RLOO a group whose rewards are all equal gets advantage exactly 0 on every token. With
no KL-loss or entropy-bonus term, such a sample's per-token loss −A·clip(ratio) is 0 for every
θ, so its gradient is exactly 0, yet a plain trainer still runs its forward and backward pass.
On verifiable tasks such groups are common — all wrong early in training, all right late (the
"zero-variance groups" DAPO, Yu et al. 2025, resamples away, which changes the algorithm).
Here they are only *skipped*: the loss over the kept samples is rescaled to the full batch's
normalizer, so the gradient, the clipping norm and the optimizer step are those of the full
batch (up to floating-point summation order).
"""

from __future__ import annotations

import torch

from placerl.algos.objectives import PolicyObjective
from placerl.types import Batch, Field


def informative_rows(batch: Batch, objective: PolicyObjective) -> torch.Tensor:
    """(B,) bool: samples whose loss depends on θ. All of them when a KL or entropy term is on."""
    size = batch.batch_size[0]
    if objective.kl_coef > 0 or objective.entropy_coef > 0:
        return torch.ones(size, dtype=torch.bool, device=batch[Field.RESPONSE_MASK].device)
    adv = batch[Field.ADVANTAGES]
    mask = batch[Field.RESPONSE_MASK].bool()
    return ((adv != 0) & mask).any(dim=1)


def kept_share(full_mask: torch.Tensor, keep: torch.Tensor, loss_agg: str) -> float:
    """The factor that turns a loss aggregated over the kept rows into the full batch's.

    token-mean divides by the number of valid tokens, the seq-mean modes by the number of
    sequences with a valid token; the kept rows' normalizer over the full one is the factor.
    """
    valid = full_mask.bool()
    if loss_agg == "token-mean":
        kept, total = valid[keep].sum(), valid.sum()
    else:
        rows = valid.any(dim=1)
        kept, total = rows[keep].sum(), rows.sum()
    return float(kept) / max(float(total), 1.0)
