"""Core RLHF math: masked statistics, advantages, off-policy weights, policy and value losses
(KL estimators and the KL-shaped reward: ``kl.py``).

Every function is pure (tensors in, tensors out) and placement-blind. Per-token tensors are
(B, R) over the response (see ``placerl.types``); masks are (B, R) with 1 on real tokens.
Padding is never *read*: masked positions go through ``torch.where`` (not ``x * mask``), so a
NaN or inf in padding cannot leak into a result, and per-token outputs are 0 on padding.

Departures from the papers are stated where they happen; stats dicts hold detached 0-d
tensors (call ``float()`` when logging, so a GPU sync happens only there).
"""

from __future__ import annotations

import torch

from placerl.algos.kl import kl_estimate

# --------------------------------------------------------------------------- masked stats


def _where(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x on valid positions, 0 elsewhere, without reading x where mask is 0 (NaN-safe)."""
    return torch.where(mask.bool(), x, x.new_zeros(()))


def _exact(x: torch.Tensor) -> torch.Tensor:
    """x in float64 for statistics that must be exact where the inputs tie.

    Every float32 (and bf16/fp16) value is a float64, a sum of up to 2**29 of them is exact
    in float64, and so is the mean of equal values: (n·r)/n = r. Small per-sequence tensors
    only (rewards, advantages), so the wider type costs nothing measurable.
    """
    return x if x.dtype == torch.float64 else x.double()


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of x over positions where mask is 1; over everything, or along ``dim``."""
    x = _where(mask, x)
    return x.sum() if dim is None else x.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over valid positions. An empty mask gives 0, not NaN (count clamped to 1)."""
    count = mask.to(x.dtype).expand_as(x)
    count = count.sum() if dim is None else count.sum(dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of x over all valid positions (a scalar).

    ``unbiased`` applies Bessel's n/(n-1); with a single valid element it returns the biased
    value (0) instead of dividing by zero.
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.to(x.dtype).expand_as(x).sum()
        var = var * n / (n - 1).clamp(min=1.0)  # n <= 1: var is 0 anyway
    return var


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """(x - mean) / std over valid tokens of the whole batch; 0 on padding.

    PPO implementations whiten advantages per batch (Schulman et al. 2017's baselines; TRL and
    veRL ``masked_whiten``). ``shift_mean=False`` keeps the mean and only rescales, which is
    what one wants for rewards whose sign matters.

    The statistics are taken in float64 (``_exact``): a float32 mean of n equal values is off
    by an ulp, and that leftover, divided by a std of the same size, would whiten a constant
    into ±O(1e-3) instead of 0.
    """
    wide = _exact(x)
    mean = masked_mean(wide, mask)
    white = (wide - mean) * torch.rsqrt(masked_var(wide, mask) + eps)
    if not shift_mean:
        white = white + mean
    return _where(mask, white.to(x.dtype))


# ----------------------------------------------------------------------------- advantages


def compute_gae(
    token_rewards: torch.Tensor,  # (B, R)
    values: torch.Tensor,  # (B, R) V(s_t)
    mask: torch.Tensor,  # (B, R)
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized Advantage Estimation (Schulman et al. 2016, eq. 16); returns (adv, returns).

    δ_t = r_t + γ V(s_{t+1}) − V(s_t),  A_t = δ_t + γλ A_{t+1},  returns_t = A_t + V(s_t).

    The episode ends at each row's last valid token: V after it is 0. Masked positions are
    *skipped* — the running A and next-V are carried through them unchanged — so right padding
    (rows of different lengths) and interior masked tokens (e.g. tool output in multi-turn, as
    in veRL) are both handled. Vectorized over B, a reverse loop over R. Outputs are 0 on padding.
    """
    valid = mask.bool()
    next_value = values.new_zeros(values.shape[0])  # (B,)
    next_adv = values.new_zeros(values.shape[0])  # (B,)
    reversed_adv = []
    for t in reversed(range(values.shape[1])):
        v_t = _where(valid[:, t], values[:, t])
        delta = _where(valid[:, t], token_rewards[:, t]) + gamma * next_value - v_t
        adv_t = delta + gamma * lam * next_adv
        next_adv = torch.where(valid[:, t], adv_t, next_adv)
        next_value = torch.where(valid[:, t], v_t, next_value)
        reversed_adv.append(_where(valid[:, t], adv_t))
    advantages = torch.stack(reversed_adv[::-1], dim=1)  # (B, R)
    returns = _where(valid, advantages + _where(valid, values))
    return advantages, returns


def _grouped(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """(N,) -> (N / group_size, group_size); groups are consecutive blocks."""
    if group_size < 2 or scores.numel() % group_size != 0:
        raise ValueError(
            f"group_size must be >= 2 and divide the number of samples; got group_size="
            f"{group_size} for {scores.numel()} samples"
        )
    return scores.view(-1, group_size)


def _equal_groups(groups: torch.Tensor) -> torch.Tensor:
    """(G, 1) bool: groups whose rewards are all the same value: no signal, advantage 0."""
    return groups.amax(dim=1, keepdim=True) == groups.amin(dim=1, keepdim=True)


def grpo_advantages(
    scores: torch.Tensor, group_size: int, scale_by_std: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """Group-relative advantages (Shao et al. 2024, DeepSeekMath §4.1.2); (N,) -> (N,).

    A_i = (r_i − mean(group)) / (std(group) + eps), with samples laid out group after group.
    std is the *unbiased* (n−1) one, as DeepSeekMath's code, TRL (``scale_rewards="group"``)
    and veRL compute it with ``torch.std``. ``scale_by_std=False`` is Dr. GRPO (Liu et al.
    2025), which drops the std to avoid up-weighting near-unanimous groups.

    A group whose rewards are all equal gets exactly 0. In float32 it would not: the group
    mean of K equal values r is off by about an ulp for K ≥ 6, the std of the equal leftovers
    is of the same size, and their quotient is a sizeable constant of a fixed sign (K = 8 at
    r = 1.3: −0.119 on every sample; veRL has this, TRL's eps 1e-4 only shrinks it). So the
    statistics are taken in float64 (``_exact``, where the mean of equal values is exact) and
    equal groups are set to 0 explicitly, which also lets ``grpo.skip_uninformative`` skip them.
    """
    groups = _exact(_grouped(scores, group_size))  # (G, K)
    adv = groups - groups.mean(dim=1, keepdim=True)
    if scale_by_std:
        adv = adv / (groups.std(dim=1, keepdim=True) + eps)
    adv = torch.where(_equal_groups(groups), adv.new_zeros(()), adv)
    return adv.reshape(-1).to(scores.dtype)


def rloo_advantages(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024, eq. 6); (N,) -> (N,).

    A_i = r_i − (1/(k−1)) Σ_{j≠i} r_j: each sample's baseline is the mean of the *other*
    samples of its prompt, so the baseline is independent of the sample and the estimate stays
    unbiased. Equals k/(k−1)·(r_i − mean). Taken in float64 with equal groups exactly 0, for
    the reason ``grpo_advantages`` gives (a float32 group sum less r_i leaves ~1e-7).
    """
    groups = _exact(_grouped(scores, group_size))  # (G, K)
    others = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
    adv = torch.where(_equal_groups(groups), groups.new_zeros(()), groups - others)
    return adv.reshape(-1).to(scores.dtype)


def expand_to_tokens(seq_adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Broadcast one value per sequence (B,) to every valid token (B, R); 0 on padding."""
    return _where(mask, seq_adv.unsqueeze(-1).expand(mask.shape))


# ------------------------------------------------------------------ off-policy correction


def truncated_importance_weights(
    old_log_probs: torch.Tensor,  # (B, R) log π_old: the trainer's policy before this update
    rollout_log_probs: torch.Tensor,  # (B, R) log μ: the (stale) policy that sampled the tokens
    mask: torch.Tensor,  # (B, R)
    cap: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token truncated importance weights ρ_t = min(π_old(y_t)/μ(y_t), cap); (B, R).

    When samples come from a behaviour policy μ that lags the trainer (bounded staleness,
    asynchronous rollout) or differs from it numerically (another engine, another precision),
    the PPO surrogate is computed against the trainer's own π_old (the *proximal* policy of
    decoupled PPO, Hilton et al. 2021) and each token's loss is reweighted by π_old/μ. The
    weight is truncated at ``cap`` (Espeholt et al. 2018, IMPALA's ρ̄ in V-trace; the
    "truncated importance sampling" fix of Yao et al. 2025 for rollout/trainer mismatch in
    LLM RL, cap 2 in their runs): truncation bounds the variance for a small bias.

    Per token, not per sequence: the sequence weight is a product of R token ratios, whose
    variance grows exponentially with length (even a modest per-token mismatch makes it
    vanish or explode), while per-token weights keep the variance of one ratio. Like V-trace
    and TIS we accept the bias of ignoring the ratio of the prefix. Weights are detached data
    (no gradient), 0 on padding. Stats: is_weight_mean, is_trunc_frac (tokens at the cap),
    is_log_ratio_abs_mean / _max (|log π_old − log μ| over valid tokens).
    """
    if not cap > 0:
        raise ValueError(f"importance-weight cap={cap}: expected a number > 0")
    valid = mask.bool()
    log_ratio = _where(valid, old_log_probs - rollout_log_probs)
    raw = torch.exp(log_ratio.detach())
    weights = _where(valid, torch.clamp(raw, max=cap))
    gap = log_ratio.detach().abs()  # |log π_old − log μ|: the sampler/trainer mismatch
    stats = {
        "is_weight_mean": masked_mean(weights, valid),
        "is_trunc_frac": masked_mean((raw > cap).to(weights.dtype), valid),
        "is_log_ratio_abs_mean": masked_mean(gap, valid),
        "is_log_ratio_abs_max": gap.amax() if gap.numel() else gap.sum(),
    }
    return weights, stats


# ----------------------------------------------------------------------------- aggregation

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
NORMED_SUM = "seq-mean-token-sum-norm"


def aggregate_loss(
    loss_mat: torch.Tensor, mask: torch.Tensor, mode: str, norm: float | None = None
) -> torch.Tensor:
    """Reduce a per-token loss (B, R) to a scalar.

    - "token-mean": Σ valid / #valid. Every token weighs the same, so long responses are not
      diluted; the default of DAPO (Yu et al. 2025) and of PPO for RLHF.
    - "seq-mean-token-mean": mean per sequence, then over sequences (original GRPO, eq. 3).
      Every sequence weighs the same, which favours short correct / long wrong answers.
    - "seq-mean-token-sum": token sum per sequence, mean over sequences: a per-sequence
      log-likelihood objective (REINFORCE-style); scale grows with length.
    - "seq-mean-token-sum-norm": Dr. GRPO (Liu et al. 2025): token sum divided by a *constant*
      ``norm``, then mean over sequences — unbiased in length. The constant is the generation
      budget (``rollout.max_new_tokens``, as TRL and veRL use); without one, the width R of
      ``mask``, which is the budget only when some response used it all. (Older veRL summed
      over sequences instead of averaging: a factor B larger.)
    Sequences with no valid token are left out of the seq-means.
    """
    if mode == "token-mean":
        return masked_mean(loss_mat, mask)
    row_has = mask.bool().any(dim=1)  # (B,)
    if mode == "seq-mean-token-mean":
        per_seq = masked_mean(loss_mat, mask, dim=1)
    elif mode == "seq-mean-token-sum":
        per_seq = masked_sum(loss_mat, mask, dim=1)
    elif mode == "seq-mean-token-sum-norm":
        per_seq = masked_sum(loss_mat, mask, dim=1) / (norm or mask.shape[1])
    else:
        raise ValueError(f"unknown loss aggregation mode={mode!r}; expected one of {AGG_MODES}")
    return masked_mean(per_seq, row_has)


# ---------------------------------------------------------------------------------- losses

# |log π_θ − log π_old| beyond 20 (a ratio of e^20 ≈ 5e8) never happens in a sane update; the
# clamp only keeps a pathological token's loss and gradient finite instead of inf or NaN
LOG_RATIO_CLAMP = 20.0


def policy_loss_clipped(
    log_probs: torch.Tensor,  # (B, R) log π_θ, with grad
    old_log_probs: torch.Tensor,  # (B, R) log π_old at sampling time
    advantages: torch.Tensor,  # (B, R)
    mask: torch.Tensor,  # (B, R)
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    agg: str = "token-mean",
    ratio_cap: float | None = None,
    is_weights: torch.Tensor | None = None,  # (B, R) truncated importance weights
    norm: float | None = None,  # seq-mean-token-sum-norm's constant (aggregate_loss)
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate (Schulman et al. 2017, eq. 7), negated to be minimized.

    ρ = π_θ/π_old;  loss_t = max(−A ρ, −A clip(ρ, 1−clip_low, 1+clip_high)).
    Asymmetric bounds are DAPO's clip-higher (Yu et al. 2025). ``ratio_cap`` = c > 1 enables
    dual-clip (Ye et al. 2020): for A < 0 the loss is also capped at −A·c, so a huge ratio on a
    bad token cannot blow up. ``is_weights`` (detached) multiply the per-token loss, for
    off-policy correction of stale samples (truncated IS, e.g. Espeholt et al. 2018).

    Stats: clip_frac (valid tokens where the clipped branch is active, i.e. no gradient),
    dual_clip_frac (with ``ratio_cap``), approx_kl (k3 estimate of KL(π_old ‖ π_θ): the samples
    come from π_old), ratio_mean.
    """
    valid = mask.bool()
    # 0 on padding -> ratio 1; clamped to ±LOG_RATIO_CLAMP (as veRL) so exp cannot overflow:
    # an inf ratio would make the loss inf, or NaN (0·inf) where the advantage is 0
    log_ratio = _where(valid, log_probs - old_log_probs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    adv = _where(valid, advantages)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss_mat = torch.maximum(unclipped, clipped)
    stats = {"clip_frac": masked_mean((clipped > unclipped).to(ratio.dtype), valid)}
    if ratio_cap is not None:
        capped = -adv * ratio_cap
        dual = (adv < 0) & (loss_mat > capped)
        loss_mat = torch.where(dual, capped, loss_mat)
        stats["dual_clip_frac"] = masked_mean(dual.to(ratio.dtype), valid)
    if is_weights is not None:
        loss_mat = loss_mat * is_weights.detach()
    loss = aggregate_loss(loss_mat, valid, agg, norm)
    with torch.no_grad():
        stats["approx_kl"] = masked_mean(kl_estimate(old_log_probs, log_probs, "k3"), valid)
        stats["ratio_mean"] = masked_mean(ratio, valid)
    return loss, {k: v.detach() for k, v in stats.items()}


def value_loss_clipped(
    values: torch.Tensor,  # (B, R) V_φ, with grad
    old_values: torch.Tensor,  # (B, R) V before the update
    returns: torch.Tensor,  # (B, R) targets
    mask: torch.Tensor,  # (B, R)
    clip: float | None = 0.2,
    agg: str = "token-mean",
    norm: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss: ½·max((V − R)², (clip(V, V_old ± c) − R)²).

    From OpenAI baselines' PPO2 (also TRL, veRL): the value may not move more than ``clip``
    from its old estimate unless that lowers the loss. ``clip=None`` gives plain ½(V − R)².
    Stats: vf_clip_frac (valid tokens where the clipped term is the larger one).
    """
    valid = mask.bool()
    # differences taken where valid only: a garbage return or value in padding would otherwise
    # give 0 · inf = NaN in the backward of the square, masked or not
    err = _where(valid, values - returns).square()
    if clip is None:
        loss_mat, vf_clipped = err, torch.zeros_like(valid)
    else:
        v_clip = old_values + torch.clamp(_where(valid, values - old_values), -clip, clip)
        err_clip = _where(valid, v_clip - returns).square()
        loss_mat, vf_clipped = torch.maximum(err, err_clip), err_clip > err
    loss = 0.5 * aggregate_loss(loss_mat, valid, agg, norm)
    return loss, {"vf_clip_frac": masked_mean(vf_clipped.to(values.dtype), valid).detach()}
