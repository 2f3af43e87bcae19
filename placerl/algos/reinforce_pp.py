"""REINFORCE++ and REINFORCE++-baseline advantages (Hu et al. 2025, arXiv 2501.03262).

REINFORCE++ is PPO without a critic: per-token rewards carry the KL to the reference
(−β·KL_t at every token, the score at the last, as InstructGPT), the return of token t is the
discounted sum of the rewards after it (γ = 1 by default), and the returns are normalised over
the *global* batch — every valid token of every sample — instead of per prompt:

    A_t = Σ_{k ≥ t} γ^{k−t} r_k,    Â_t = (A_t − mean_batch A) / std_batch A.

The policy is then updated with PPO's clipped surrogate (``core.policy_loss_clipped``); no new
loss is needed. Normalising over the whole batch rather than a group avoids the bias of a
group std computed from the same few samples it divides (the paper's argument against GRPO).

REINFORCE++-baseline (k > 1 samples per prompt) first subtracts the mean score of the
prompt's samples — a group baseline, as RLOO and Dr. GRPO — then proceeds as above. A group
whose scores are all equal is exactly 0 before normalisation (float64 statistics and an
explicit zero, ``core.grpo_advantages``), so without a KL term its returns are exactly 0.

"Global across data-parallel workers" holds by construction in placerl: advantages are
computed on the controller over the whole step's batch before the runtime splits it over
workers and minibatches, so every worker sees the same normaliser.

Departures from the paper:
- The std is the unbiased (n−1) one with 1e-8 under the square root (``core.masked_whiten``,
  float64 statistics, exactly 0 on a constant batch); the paper writes plain mean and std.
- The per-token KL comes in as a tensor: the paper's is k1 = log π_old − log π_ref; any
  estimator the caller picks is accepted (k2 is another common choice), or None for a KL loss.
- Baseline variant: the group mean is taken of the scores, then the KL enters per token
  (OpenRLHF's order). veRL's ``reinforce_plus_plus_baseline`` instead sums the KL-shaped
  token rewards into one score per sample and broadcasts it (no per-token returns).
- Re-centring: whitening subtracts the batch mean, so an equal-score group that is 0 before
  normalisation ends at −mean/std after it (a small, uniform push; the paper, veRL and
  OpenRLHF all do this). For the baseline variant ``recenter=False`` only divides by the std
  (ms-swift's reading of it): zero-signal groups then stay exactly 0 and can be skipped.
  Plain REINFORCE++ always re-centres (its returns have no baseline).
"""

from __future__ import annotations

import torch

from placerl.algos import core
from placerl.algos.kl import token_rewards_from_scores


def discounted_returns(
    token_rewards: torch.Tensor,  # (B, R)
    mask: torch.Tensor,  # (B, R)
    gamma: float = 1.0,
) -> torch.Tensor:
    """Σ_{k ≥ t} γ^{k−t} r_k over each row's valid tokens; (B, R), 0 on padding.

    GAE with V = 0 and λ = 1 is exactly this (δ_t = r_t, A_t = δ_t + γ A_{t+1}), including its
    handling of padding and interior masked tokens (skipped, γ counted over valid tokens).
    """
    values = torch.zeros_like(token_rewards)
    returns, _ = core.compute_gae(token_rewards, values, mask, gamma, 1.0)
    return returns


def _normalise(returns: torch.Tensor, mask: torch.Tensor, recenter: bool) -> torch.Tensor:
    """Whitening over every valid token of the batch, or (``recenter=False``) x / std only;
    unbiased, float64 statistics, 1e-8 under the square root; 0 on padding."""
    if recenter:
        return core.masked_whiten(returns, mask)
    wide = returns.double()
    scaled = wide * torch.rsqrt(core.masked_var(wide, mask) + 1e-8)
    return torch.where(mask.bool(), scaled.to(returns.dtype), returns.new_zeros(()))


def reinforce_pp_advantages(
    scores: torch.Tensor,  # (B,) one score per response
    mask: torch.Tensor,  # (B, R)
    *,
    kl: torch.Tensor | None = None,  # (B, R) per-token KL to the reference (k1 in the paper)
    kl_coef: float = 0.0,
    gamma: float = 1.0,
    group_size: int = 1,  # unused: REINFORCE++ has no group baseline (uniform signature)
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++: KL-shaped token rewards → discounted returns → global whitening.

    Returns (advantages, returns), both (B, R) and 0 on padding; the returns are the values
    before normalisation.
    """
    rewards = token_rewards_from_scores(scores, mask, kl, kl_coef)
    returns = discounted_returns(rewards, mask, gamma)
    return _normalise(returns, mask, recenter=True), returns


def reinforce_pp_baseline_advantages(
    scores: torch.Tensor,  # (B,) one score per response, groups of group_size consecutive rows
    mask: torch.Tensor,  # (B, R)
    *,
    group_size: int,
    kl: torch.Tensor | None = None,  # (B, R)
    kl_coef: float = 0.0,
    gamma: float = 1.0,
    recenter: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++-baseline: score − group mean (equal groups exactly 0), then as REINFORCE++.

    Returns (advantages, returns), both (B, R); the returns are the group-centred values
    before the global normalisation. ``recenter=False`` divides by the batch std without
    subtracting the batch mean (module docstring); it is meant for ``kl=None`` (a KL loss),
    where the centred returns already have a group mean of 0.
    """
    centred = core.grpo_advantages(scores, group_size, scale_by_std=False)
    rewards = token_rewards_from_scores(centred, mask, kl, kl_coef)
    returns = discounted_returns(rewards, mask, gamma)
    return _normalise(returns, mask, recenter), returns
