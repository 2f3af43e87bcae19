"""KL to the reference: Schulman's estimators, which of them may be a loss, the KL-shaped reward.

Pure tensor math like ``core``: d = log π − log π_ref per token, masked before any estimator
reads it, so padding never reaches an exp.
"""

from __future__ import annotations

import math

import torch

KL_KINDS = ("k1", "k2", "k3", "abs")
KL_LOSS_KINDS = ("k2", "k3")  # estimators whose gradient, as a loss, pulls π toward π_ref


def kl_loss_refusal(kind: str) -> str | None:
    """Why ``kind`` cannot be a KL *loss* (None when it can).

    A loss's gradient is taken at tokens sampled from π (on-policy), so what counts is
    E_π[∇ estimator]. k1 = d gives ∇log π, whose mean under π is 0 and which does not
    depend on π_ref at all: the "penalty" pulls nowhere. abs = |d| gives sign(d)·∇log π, not
    the gradient of any divergence to π_ref. k3 = e^{−d} + d − 1 (GRPO, DeepSeekMath) and
    k2 = ½d² (whose gradient d·∇log π is the true ∇KL on-policy) do regularise. As a reward
    penalty (PPO's kl_in_reward) every estimator works: there only its value enters.
    """
    if kind in KL_LOSS_KINDS:
        return None
    return (
        f"the KL estimator {kind!r} cannot be a loss term: its gradient does not pull the "
        f"policy toward the reference ({'∇k1 = ∇log π, mean 0 under π' if kind == 'k1' else '∇|d| = sign(d)·∇log π is no divergence gradient'}); "
        f"use k3 (GRPO's) or k2, or keep the KL in the reward"
    )


# k3 = e^{−d} + d − 1 is exact for d ≥ −K3_LINEAR_BELOW and continued by its tangent below
# (a Huber-like tail): value and gradient stay finite for any finite d, and the gradient
# with respect to log π, 1 − e^{−d}, is bounded by e^{K3_LINEAR_BELOW} − 1 ≈ 2.2e4 in
# magnitude while keeping its sign (veRL instead clamps the value to ±10, which zeroes the
# gradient of exactly the tokens furthest from the reference).
K3_LINEAR_BELOW = 10.0


def _where(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x on valid positions, 0 elsewhere, without reading x there (as ``core``'s)."""
    return torch.where(mask.bool(), x, x.new_zeros(()))


def _k3(d: torch.Tensor) -> torch.Tensor:
    """e^{−d} + d − 1, linear below d = −K3_LINEAR_BELOW (see the constant)."""
    c = K3_LINEAR_BELOW
    inside = d.clamp(min=-c)  # the exact branch never sees e^{>c}: no overflow, no inf·0
    exact = torch.exp(-inside) + inside - 1.0
    slope = 1.0 - math.exp(c)  # k3'(−c)
    return torch.where(d < -c, exact + slope * (d - inside), exact)


def kl_estimate(
    log_probs: torch.Tensor,  # (B, R) log π of the sampled tokens (the sampler)
    ref_log_probs: torch.Tensor,  # (B, R) log π_ref
    kind: str,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from tokens sampled from π; (B, R).

    From Schulman, "Approximating KL Divergence" (2020), with d = log π − log π_ref:
      k1 = d (unbiased, high variance, can be negative); k2 = ½ d² (biased, low variance);
      k3 = exp(−d) + d − 1 (unbiased, ≥ 0, low variance; GRPO's KL term); abs = |d|.
    Zero on padding when ``mask`` is given: d is masked *before* any estimator reads it, so a
    padded position never reaches exp (before, exp(−d) overflowed there for d < −88.7 and the
    backward gave 0·inf = NaN). k3 is continued linearly below d = −K3_LINEAR_BELOW so its
    value and its gradient (1 − π_ref/π) stay finite and bounded on real tokens too.
    """
    d = log_probs - ref_log_probs
    if mask is not None:
        d = _where(mask, d)
    if kind == "k1":
        kl = d
    elif kind == "k2":
        kl = 0.5 * d.square()
    elif kind == "k3":
        kl = _k3(d)
    elif kind == "abs":
        kl = d.abs()
    else:
        raise ValueError(f"unknown KL estimator kind={kind!r}; expected one of {KL_KINDS}")
    return kl if mask is None else _where(mask, kl)


def kl_metrics(
    log_probs: torch.Tensor,  # (B, R) log π of the sampled tokens (the sampler)
    ref_log_probs: torch.Tensor,  # (B, R) log π_ref
    mask: torch.Tensor,  # (B, R) 1 on response tokens
) -> dict[str, float]:
    """KL(π ‖ π_ref) per response, in nats, averaged over the batch, by two estimators.

    - ``kl/k3``: Σ_t k3 — what the progress bar's ``kl`` and the KL plot show. Every term is
      ≥ 0 (k3 = e^{−d} + d − 1 ≥ 0, and so is its linear tail), so it is never negative; it
      is unbiased for the sequence KL and has low variance.
    - ``kl/mean``: Σ_t k1 = log π(y) − log π_ref(y), also unbiased, but a batch mean of it can
      be negative (it was, −0.03, early in runs where π ≈ π_ref). The adaptive KL controller
      reads it (its ``ppo.kl_target`` is in these units) and tests compare trajectories on it.

    The KL *loss* (``loss/kl``) uses its stage's ``kl_estimator`` per token, aggregated like
    the policy loss: a different number again, logged under its own name.
    """
    k1 = kl_estimate(log_probs, ref_log_probs, "k1", mask)
    k3 = kl_estimate(log_probs, ref_log_probs, "k3", mask)
    return {"kl/mean": float(k1.sum(-1).mean()), "kl/k3": float(k3.sum(-1).mean())}


def token_rewards_from_scores(
    scores: torch.Tensor,  # (B,)
    mask: torch.Tensor,  # (B, R)
    kl: torch.Tensor | None,  # (B, R) per-token KL to the reference, or None
    kl_coef: float,
) -> torch.Tensor:
    """Per-token rewards: −β·KL_t at every valid token, plus the score at the last one; (B, R).

    The KL-shaped reward of Ziegler et al. 2019 (eq. 2) and InstructGPT (Ouyang et al. 2022):
    the reward model scores the whole response, so its score lands on the final token.
    Rows with no valid token get nothing.
    """
    valid = mask.bool()
    rewards = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device)
    if kl is not None:
        rewards = _where(valid, -kl_coef * kl.to(scores.dtype))
    positions = torch.arange(mask.shape[1], device=mask.device)  # (R,)
    last = torch.where(valid, positions, -1).amax(dim=1)  # (B,) -1 when empty
    score_at_last = torch.where(last >= 0, scores, scores.new_zeros(()))  # (B,)
    return rewards.scatter_add(1, last.clamp(min=0).unsqueeze(1), score_at_last.unsqueeze(1))
