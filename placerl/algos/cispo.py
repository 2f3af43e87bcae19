"""CISPO: Clipped IS-weight Policy Optimization (MiniMax-M1, arXiv 2506.13585, §3.1).

PPO's clipped surrogate drops the gradient of every token whose ratio left the trust region;
in long reasoning those are often the rare "fork" tokens (However, Wait, Recheck) that an
update raises most, and with several off-policy minibatches they never learn. CISPO clips the
importance-sampling *weight* instead and stops its gradient, so every token keeps a gradient:

    J(θ) = (1/Σ_i |o_i|) Σ_i Σ_t  sg[r̂_i,t] · Â_i,t · log π_θ(o_i,t)          (paper eq. 4)
    r̂_i,t = clip(r_i,t, 1 − ε_low, 1 + ε_high),  r_i,t = π_θ(o_i,t) / π_old(o_i,t)

The gradient of token t is r̂_i,t·Â_i,t·∇log π_θ: the off-policy REINFORCE gradient with a
bounded weight. The normaliser 1/Σ|o_i| is the token mean over the batch (DAPO's token-level
loss), the default aggregation here. The paper imposes no lower bound ("we did not impose a
lower bound on the IS weight by setting ε_low to a large value") and tunes only ε_high.

Stale samples: the weight of a token sampled by μ is π_θ/μ = (π_θ/π_old)·(π_old/μ). CISPO's
clipped r̂ bounds the first factor; the second is ``core.truncated_importance_weights`` (per
token, capped), passed as ``is_weights`` and multiplied in, detached, like every placerl loss.
With a single-pass update (π_old = sg[π_θ]) r = 1, so r̂ = 1 and only the truncated π_old/μ
weights correct the gap.

Departures from the paper:
- The paper gives no value for ε_high; the default 0.2 (cap 1.2) is veRL's CISPO example
  (Tinker's CISPO caps at 4, after ScaleRL, arXiv 2510.13786) and should be tuned. ``clip_low=None`` (the default) is the paper's "no lower bound".
- log r is clamped to ±``core.LOG_RATIO_CLAMP`` before exp, so a pathological token's weight
  stays finite (the weight carries no gradient, so the clamp changes nothing else).
- The loss value −r̂·Â·log π is not the objective's level (log π < 0 shifts it); only its
  gradient means something. Stats report the weights, not a surrogate value.
"""

from __future__ import annotations

import torch

from placerl.algos import core
from placerl.algos.kl import kl_estimate

CISPO_CLIP_LOW: float | None = None  # the paper: no lower bound on the IS weight
CISPO_CLIP_HIGH = 0.2  # not given in the paper; veRL's CISPO example (cap 1 + 0.2)
CISPO_AGG = "token-mean"  # the paper's 1 / Σ_i |o_i|


def cispo_loss(
    log_probs: torch.Tensor,  # (B, R) log π_θ, with grad
    old_log_probs: torch.Tensor,  # (B, R) log π_old
    advantages: torch.Tensor,  # (B, R)
    mask: torch.Tensor,  # (B, R)
    clip_low: float | None = CISPO_CLIP_LOW,
    clip_high: float = CISPO_CLIP_HIGH,
    agg: str = CISPO_AGG,
    is_weights: torch.Tensor | None = None,  # (B, R) truncated π_old/μ weights (stale samples)
    norm: float | None = None,  # seq-mean-token-sum-norm's constant (core.aggregate_loss)
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """−sg[clip(π_θ/π_old, 1−clip_low, 1+clip_high)]·Â·log π_θ per token, aggregated (paper eq. 4).

    ``clip_low=None``: no lower bound. Stats: clip_frac (valid tokens whose weight was clipped
    — they still have a gradient), approx_kl (k3 of KL(π_old‖π_θ)), ratio_mean (unclipped r),
    cispo_weight_mean (the clipped r̂).
    """
    valid = mask.bool()
    zero = log_probs.new_zeros(())
    with torch.no_grad():
        log_ratio = torch.where(valid, log_probs - old_log_probs, zero)
        ratio = torch.exp(log_ratio.clamp(-core.LOG_RATIO_CLAMP, core.LOG_RATIO_CLAMP))
        lower = None if clip_low is None else 1.0 - clip_low
        weight = torch.clamp(ratio, min=lower, max=1.0 + clip_high)
    adv = torch.where(valid, advantages, zero)
    loss_mat = -weight * adv * torch.where(valid, log_probs, zero)
    if is_weights is not None:
        loss_mat = loss_mat * is_weights.detach()
    loss = core.aggregate_loss(loss_mat, valid, agg, norm)
    with torch.no_grad():
        stats = {
            "clip_frac": core.masked_mean((weight != ratio).to(ratio.dtype), valid),
            "approx_kl": core.masked_mean(kl_estimate(old_log_probs, log_probs, "k3"), valid),
            "ratio_mean": core.masked_mean(ratio, valid),
            "cispo_weight_mean": core.masked_mean(weight, valid),
        }
    return loss, stats
