"""DAPO's length handling (Yu et al. 2025, arXiv 2503.14476, §3.4): overlong reward shaping
and overlong filtering. Pure functions of response lengths and masks.

DAPO has four parts. Two already live in ``core``: clip-higher (``policy_loss_clipped``'s
``clip_high``; the paper's ε_low = 0.2, ε_high = 0.28) and the token-level loss
(``aggregate_loss(..., "token-mean")``). Dynamic sampling is ``algos/dynamic_sampling.py``.
This module is the fourth, the treatment of responses that run into the length limit:

- **Soft overlong punishment** (paper eq. 13): a length-aware penalty added to the task reward,
      R_length(y) = 0                                 if |y| ≤ L_max − L_cache
                  = ((L_max − L_cache) − |y|) / L_cache  if L_max − L_cache < |y| ≤ L_max
                  = −1                                if |y| > L_max,
  so a response is penalised progressively inside the last L_cache tokens of the budget, and
  fully once cut. The paper's run: expected maximum 16,384 tokens plus a 4,096-token cache,
  L_max = 20,480 (the generation budget), L_cache = 4,096.
- **Overlong filtering**: a truncated response's reward says nothing about its reasoning
  (it was cut, not wrong), so its tokens can be left out of the loss (``overlong_loss_mask``).

A response is *truncated* when it was cut by the budget: its last valid token is not an end
token (``truncated_rows``). Its observed length is then at most L_max but its true length is
larger, which is the paper's |y| > L_max case: it gets −1 whatever its observed length.

Departures from the paper:
- ``penalty_factor`` scales the penalty (veRL's ``overlong_buffer.penalty_factor``; the paper's
  is 1, the default).
- Lengths count valid response tokens (end token included, as ``Field.RESPONSE_MASK``).
- The penalty is returned on its own; adding it to the scores is the caller's (one line), so
  the task reward stays available for logging and for the dynamic-sampling filter's choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from placerl.types import Batch, Field

# Yu et al. 2025, §4.1: 16,384 expected + 4,096 cache = 20,480 generated tokens at most
DAPO_MAX_LENGTH = 20480
DAPO_CACHE_LENGTH = 4096
DAPO_CLIP_LOW = 0.2  # clip-higher: ε_low (for core.policy_loss_clipped)
DAPO_CLIP_HIGH = 0.28  # clip-higher: ε_high


def response_lengths(mask: torch.Tensor) -> torch.Tensor:
    """(B,) int64 number of valid response tokens per row."""
    return mask.bool().sum(dim=1)


def truncated_rows(
    response_ids: torch.Tensor,  # (B, R) right-padded sampled tokens
    mask: torch.Tensor,  # (B, R) 1 on valid tokens (end token included)
    end_token_ids: int | Sequence[int],
) -> torch.Tensor:
    """(B,) bool: responses cut by the budget, i.e. whose last valid token is no end token.

    A row with no valid token counts as truncated (nothing was finished).
    """
    valid = mask.bool()
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = torch.where(valid, positions, -1).amax(dim=1)  # (B,) -1 when empty
    last_token = response_ids.gather(1, last.clamp(min=0).unsqueeze(1)).squeeze(1)
    ends = torch.as_tensor(end_token_ids, dtype=response_ids.dtype, device=response_ids.device)
    finished = torch.isin(last_token, ends.reshape(-1)) & (last >= 0)
    return ~finished


def overlong_penalty(
    lengths: torch.Tensor,  # (B,) response lengths in tokens
    max_length: int,  # L_max: the generation budget
    cache_length: int,  # L_cache: the soft band before it
    truncated: torch.Tensor | None = None,  # (B,) bool: cut by the budget (gets −1)
    penalty_factor: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """DAPO's soft overlong punishment (paper eq. 13); (B,) in [−penalty_factor, 0].

    0 up to L_max − L_cache, linear down to −1 at L_max, −1 beyond it and for truncated rows;
    times ``penalty_factor``. Taken in float64 from integer lengths, so the band's ends are
    exact (0 and −1) in any ``dtype``.
    """
    if not 0 < cache_length <= max_length:
        raise ValueError(
            f"overlong cache_length={cache_length}: expected 0 < cache_length <= max_length "
            f"(= {max_length}), the soft band lies inside the generation budget"
        )
    soft_start = max_length - cache_length
    over = (lengths.to(torch.float64) - soft_start).clamp(min=0.0)  # tokens into the band
    penalty = -(over / cache_length).clamp(max=1.0)  # 0 … −1, −1 beyond L_max
    if truncated is not None:
        penalty = torch.where(truncated.bool(), penalty.new_full((), -1.0), penalty)
    return (penalty_factor * penalty).to(dtype)


def overlong_loss_mask(
    mask: torch.Tensor,  # (B, R) response mask
    truncated: torch.Tensor,  # (B,) bool
) -> torch.Tensor:
    """The response mask with truncated rows zeroed: DAPO's overlong filtering; (B, R).

    Use it as the loss mask only (the sampled tokens, log-probs and KL statistics keep the
    full mask). With token-mean aggregation the kept tokens' mean is taken over the kept
    tokens alone, as the paper's normaliser Σ|o_i| runs over the samples in the loss.
    """
    return mask * (~truncated.bool()).unsqueeze(-1).to(mask.dtype)


@dataclass(frozen=True)
class OverlongShaping:
    """DAPO's overlong handling of one batch, as a run configures it (``dapo.overlong``).

    ``shaped_scores`` adds the soft penalty to the task scores (the batch's SCORES stay the
    task reward: the dynamic-sampling filter and ``reward/mean`` read those);
    ``loss_batch`` is the batch the update sees, truncated rows masked out of the loss.
    """

    max_length: int  # L_max: rollout.max_new_tokens
    cache_length: int  # L_cache
    end_token_ids: tuple[int, ...]  # what ends a response (the rollout's end tokens)
    shaping: bool = True
    penalty_factor: float = 1.0
    filter_truncated: bool = False

    def truncated(self, batch: Batch) -> torch.Tensor:
        """(B,) bool: responses cut by the budget — as long as it and without an end token
        (a stop string ends a response early, so only a full-length row can be cut)."""
        mask = batch[Field.RESPONSE_MASK]
        ended = ~truncated_rows(batch[Field.RESPONSE_IDS], mask, self.end_token_ids)
        return (response_lengths(mask) >= self.max_length) & ~ended

    def shaped_scores(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """SCORES plus the soft overlong penalty (when ``shaping``); its metrics."""
        scores, truncated = batch[Field.SCORES], self.truncated(batch)
        metrics = {"response/truncated_share": float(truncated.float().mean())}
        if not self.shaping:
            return scores, metrics
        lengths = response_lengths(batch[Field.RESPONSE_MASK])
        penalty = overlong_penalty(
            lengths,
            self.max_length,
            self.cache_length,
            truncated,
            self.penalty_factor,
            dtype=scores.dtype,
        )
        metrics["reward/overlong_penalty"] = float(penalty.mean())
        return scores + penalty, metrics

    def loss_batch(self, batch: Batch) -> Batch:
        """The batch the update sees: with ``filter_truncated`` a shallow copy whose response
        mask — the loss mask of every policy loss, and the count its mean divides by, across
        micro-batches and workers — leaves truncated rows out (``overlong_loss_mask``)."""
        if not self.filter_truncated:
            return batch
        out = batch.copy()
        out[Field.RESPONSE_MASK] = overlong_loss_mask(
            batch[Field.RESPONSE_MASK], self.truncated(batch)
        )
        return out
