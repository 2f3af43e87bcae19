"""GSPO: Group Sequence Policy Optimization (Zheng et al. 2025, arXiv 2507.18071).

GRPO weights each token by its own ratio π_θ(y_t)/π_old(y_t) although the reward is given to
the whole sequence; GSPO uses one ratio per sequence, the length-normalised likelihood ratio

    s_i = (π_θ(y_i|x) / π_old(y_i|x))^(1/|y_i|) = exp( mean_t (log π_θ(y_i,t) − log π_old(y_i,t)) ),

clips it per sequence and maximises (1/G) Σ_i min(s_i·Â_i, clip(s_i, 1−ε_low, 1+ε_high)·Â_i)
(paper eq. 5–7), so a sequence is kept or dropped whole. Since s_i is a mean of log-ratios its
spread is much smaller than a token ratio's: the paper clips at ε_low = 3e-4, ε_high = 4e-4
(§5.1), the defaults here.

GSPO-token (paper eq. 13–14) gives every token its own advantage with the same clipping:
s_i,t = sg[s_i]·π_θ(y_i,t)/sg[π_θ(y_i,t)] has the value of s_i and the gradient of one token.
With one advantage per sequence it equals GSPO in value and gradient (tested), under every
aggregation mode.

Stale samples (a behaviour policy μ that lags π_old, or another engine): the decoupled
objective weighs each sample by π_old(y)/μ(y) = Π_t ρ_t (ρ_t = π_old(y_t)/μ(y_t)), whose
variance grows exponentially with length. ``core.truncated_importance_weights`` keeps one
weight per token instead; for a sequence-level objective we keep one per sequence and
length-normalise it exactly as GSPO normalises its own ratio:

    w_i = min( (π_old(y_i)/μ(y_i))^(1/|y_i|), cap ) = min( exp(mean_t log ρ_t), cap ),

the geometric mean of the token weights, then truncated (``sequence_importance_weights``).
Each sequence's loss is multiplied by w_i (detached). Like per-token truncation this is biased
for lower variance. When the update is one pass, placerl takes π_old = sg[π_θ] (the update's
own forward): then s_i = 1 exactly, clipping is inactive, the gradient is the length-normalised
REINFORCE one −Â_i·(1/|y_i|)Σ_t ∇log π_θ, and w_i = min(geomean(π_θ/μ), cap) carries the whole
off-policy correction. Per-token weights (B, R) are accepted too: each token's share of the
sequence loss is then weighted by its ρ_t, which is no longer a sequence-level objective (GSPO
and GSPO-token then differ).

Departures from the paper:
- Advantages come in per token (B, R), as every placerl policy loss takes them; GSPO uses each
  row's mean over its valid tokens (taken in float64, so a broadcast Â_i comes back exactly).
  Â_i is whatever estimator the run picks (the paper's is GRPO's group normalisation).
- log s_i is clamped to ±``core.LOG_RATIO_CLAMP`` (no gradient beyond), as the PPO loss clamps
  its log-ratio: a pathological sequence gets a finite loss instead of inf or NaN.
- Other aggregations than the paper's (1/G)Σ_i (``seq-mean-token-mean``) are allowed; token-mean
  weighs a sequence by its length.
- The stale-sample weight above is ours; the paper trains without a behaviour-policy gap.
- The paper uses no KL term (β = 0); that is the wiring's choice, not this module's.
"""

from __future__ import annotations

import math

import torch

from placerl.algos import core
from placerl.algos.kl import kl_estimate

# Zheng et al. 2025, §5.1: "the left and right clipping ranges in Eq. (5) to 3e-4 and 4e-4"
GSPO_CLIP_LOW = 3e-4
GSPO_CLIP_HIGH = 4e-4
GSPO_AGG = "seq-mean-token-mean"  # the paper's (1/G) Σ_i over sequences


def _valid(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x on valid positions, 0 elsewhere, without reading x where mask is 0 (NaN-safe)."""
    return torch.where(mask.bool(), x, x.new_zeros(()))


def _row_count(mask: torch.Tensor) -> torch.Tensor:
    """(B,) number of valid tokens per row, at least 1 (an empty row then averages to 0)."""
    return mask.bool().sum(dim=1).clamp(min=1)


def sequence_log_ratio(
    log_probs: torch.Tensor,  # (B, R) log π_θ, with grad
    old_log_probs: torch.Tensor,  # (B, R) log π_old
    mask: torch.Tensor,  # (B, R)
) -> torch.Tensor:
    """log s_i = mean over valid tokens of (log π_θ − log π_old), clamped; (B,), with grad."""
    per_token = _valid(mask, log_probs - old_log_probs)
    mean = per_token.sum(dim=1) / _row_count(mask).to(per_token.dtype)
    return mean.clamp(-core.LOG_RATIO_CLAMP, core.LOG_RATIO_CLAMP)


def sequence_advantages(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) mean advantage of each row's valid tokens, taken in float64 so that a sequence
    advantage broadcast to its tokens comes back bit for bit (a float32 mean of n equal values
    can be off by an ulp); 0 for a row with no valid token."""
    wide = _valid(mask, advantages).double()
    return (wide.sum(dim=1) / _row_count(mask).double()).to(advantages.dtype)


def _weighted(loss_mat: torch.Tensor, is_weights: torch.Tensor | None) -> torch.Tensor:
    """The per-token loss times detached IS weights: (B,) per sequence or (B, R) per token."""
    if is_weights is None:
        return loss_mat
    weights = is_weights.detach()
    return loss_mat * (weights.unsqueeze(-1) if weights.dim() == 1 else weights)


def _clipped_surrogate(
    ratio: torch.Tensor, adv: torch.Tensor, clip_low: float, clip_high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """max(−A·s, −A·clip(s, 1−low, 1+high)) and where the clipped branch is the active one."""
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    return torch.maximum(unclipped, clipped), clipped > unclipped


def _stats(
    clipped: torch.Tensor,  # (B, R) bool
    seq_log_ratio: torch.Tensor,  # (B,)
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    mask: torch.Tensor,
) -> dict[str, torch.Tensor]:
    valid = mask.bool()
    rows = valid.any(dim=1)
    with torch.no_grad():
        return {
            # share of valid tokens whose sequence is clipped (the paper's Fig. 2 measure)
            "clip_frac": core.masked_mean(clipped.to(log_probs.dtype), valid),
            "approx_kl": core.masked_mean(kl_estimate(old_log_probs, log_probs, "k3"), valid),
            "ratio_mean": core.masked_mean(torch.exp(seq_log_ratio.detach()), rows),
        }


def gspo_loss(
    log_probs: torch.Tensor,  # (B, R) log π_θ, with grad
    old_log_probs: torch.Tensor,  # (B, R) log π_old
    advantages: torch.Tensor,  # (B, R) one value per row (a sequence advantage broadcast)
    mask: torch.Tensor,  # (B, R)
    clip_low: float = GSPO_CLIP_LOW,
    clip_high: float = GSPO_CLIP_HIGH,
    agg: str = GSPO_AGG,
    is_weights: torch.Tensor | None = None,  # (B,) sequence or (B, R) token IS weights
    norm: float | None = None,  # seq-mean-token-sum-norm's constant (core.aggregate_loss)
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GSPO's sequence-level clipped objective, negated to be minimised (paper eq. 5).

    loss_i = max(−Â_i·s_i, −Â_i·clip(s_i, 1−clip_low, 1+clip_high)), given to every valid token
    of row i and aggregated with ``agg`` (the paper's mean over sequences by default).
    Stats: clip_frac (valid tokens of clipped sequences), approx_kl (k3 of KL(π_old‖π_θ) per
    token), ratio_mean (mean s_i over rows with a valid token).
    """
    valid = mask.bool()
    seq_log_ratio = sequence_log_ratio(log_probs, old_log_probs, mask)  # (B,)
    seq_adv = sequence_advantages(advantages, mask)  # (B,)
    seq_loss, seq_clipped = _clipped_surrogate(
        torch.exp(seq_log_ratio), seq_adv, clip_low, clip_high
    )
    loss_mat = _valid(valid, seq_loss.unsqueeze(-1).expand(valid.shape))
    loss = core.aggregate_loss(_weighted(loss_mat, is_weights), valid, agg, norm)
    clipped = seq_clipped.unsqueeze(-1).expand(valid.shape)
    return loss, _stats(clipped, seq_log_ratio, log_probs, old_log_probs, mask)


def gspo_token_loss(
    log_probs: torch.Tensor,  # (B, R) log π_θ, with grad
    old_log_probs: torch.Tensor,  # (B, R) log π_old
    advantages: torch.Tensor,  # (B, R) per-token advantages Â_i,t
    mask: torch.Tensor,  # (B, R)
    clip_low: float = GSPO_CLIP_LOW,
    clip_high: float = GSPO_CLIP_HIGH,
    agg: str = GSPO_AGG,
    is_weights: torch.Tensor | None = None,  # (B,) sequence or (B, R) token IS weights
    norm: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GSPO-token (paper eq. 13): per-token advantages under the sequence ratio.

    s_i,t = sg[s_i]·π_θ(y_i,t)/sg[π_θ(y_i,t)]: the value of s_i, the gradient of token t alone
    (s_i·∇log π_θ(y_i,t)). loss_i,t = max(−Â_i,t·s_i,t, −Â_i,t·clip(s_i,t, …)). Where log s_i
    was clamped the token term is dropped too, so a clamped sequence has no gradient in either
    variant. Stats as ``gspo_loss``.
    """
    valid = mask.bool()
    seq_log_ratio = sequence_log_ratio(log_probs, old_log_probs, mask)  # (B,)
    inside = seq_log_ratio.abs() < core.LOG_RATIO_CLAMP  # (B,) not clamped
    own = _valid(valid & inside.unsqueeze(-1), log_probs - log_probs.detach())  # value 0
    ratio = torch.exp(seq_log_ratio.detach().unsqueeze(-1) + own)  # (B, R)
    loss_mat, clipped = _clipped_surrogate(ratio, _valid(valid, advantages), clip_low, clip_high)
    loss = core.aggregate_loss(_weighted(_valid(valid, loss_mat), is_weights), valid, agg, norm)
    return loss, _stats(clipped, seq_log_ratio, log_probs, old_log_probs, mask)


def sequence_importance_weights(
    old_log_probs: torch.Tensor,  # (B, R) log π_old: the trainer's policy before this update
    rollout_log_probs: torch.Tensor,  # (B, R) log μ: the (stale) policy that sampled the tokens
    mask: torch.Tensor,  # (B, R)
    cap: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Truncated, length-normalised sequence IS weights w_i = min(exp(mean_t log ρ_t), cap); (B,).

    ρ_t = π_old(y_t)/μ(y_t); the geometric mean of a row's token weights, truncated at ``cap``
    (see the module docstring for why). Detached; 1 for a row with no valid token. Stats as
    ``core.truncated_importance_weights`` but per sequence: is_weight_mean and is_trunc_frac
    (rows at the cap) over rows with a valid token; is_log_ratio_abs_mean / _max per token.
    """
    if not cap > 0:
        raise ValueError(f"importance-weight cap={cap}: expected a number > 0")
    valid = mask.bool()
    rows = valid.any(dim=1)
    with torch.no_grad():
        token_log_ratio = _valid(valid, old_log_probs - rollout_log_probs)
        seq = token_log_ratio.sum(dim=1) / _row_count(mask).to(token_log_ratio.dtype)
        weights = torch.exp(seq.clamp(max=math.log(cap)))  # = min(e^seq, cap), never overflows
        gap = token_log_ratio.abs()
        stats = {
            "is_weight_mean": core.masked_mean(weights, rows),
            "is_trunc_frac": core.masked_mean((seq > math.log(cap)).to(weights.dtype), rows),
            "is_log_ratio_abs_mean": core.masked_mean(gap, valid),
            "is_log_ratio_abs_max": gap.amax() if gap.numel() else gap.sum(),
        }
    return weights, stats
