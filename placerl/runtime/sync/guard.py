"""The sync guard: after every weight sync, check that the rollout now holds the trainer's weights.

A rollout that samples with stale or garbled weights trains the policy on the wrong samples
without any error — the peers' most damaging silent bug (an engine that kept its old weights,
TRL #5312; a garbled bucket, veRL #7904). Two cheap checks stop the run instead:

1. **What arrived.** Every receiver fingerprints the buckets it received (``transport.
   fingerprint``, on the device, no host copy); they must equal the source's fingerprint of what
   it sent. An in-process copy fingerprints the copy against the source. An engine's weights
   cannot be read back; there the second check is the guard.
2. **What the next batch says.** The first batch sampled after a sync carries the sampler's
   log-probs log μ; the trainer's log π_old of the same tokens (recomputed anyway for stale
   batches and engines, else one extra forward) must agree: the mean over response tokens of
   |log π_old − log μ| must not exceed ``MAX_LOG_PROB_GAP`` nats. That batch lags at most one
   update (the pipeline syncs right before launching it), so a healthy run shows numerical
   mismatch (≲ 0.05 with bf16 or an engine) plus one update's drift (≲ 0.1 at PPO-sized steps,
   whose ratio clip of 0.2 bounds a token's change near 0.2); weights that did not arrive, or
   arrived garbled, give nats per token. The gap is logged as ``sync/log_prob_gap``.
"""

from __future__ import annotations

import torch

from placerl.runtime.faults import WorkerFailure
from placerl.types import Batch, Field

MAX_LOG_PROB_GAP = 1.0  # nats per response token, mean over the batch (module doc)


class SyncError(WorkerFailure):
    """The rollout does not hold the trainer's weights after a sync: training would go on with
    samples from the wrong policy. Nothing was trained on them; the CLI reports it like a dead
    worker (exit 3, the command that resumes from the last checkpoint)."""

    def __init__(self, message: str):
        super().__init__(message, role="rollout")


def check_arrival(sent: int | None, arrived: dict[str, int | None]) -> None:
    """Every receiver's fingerprint must equal the sender's (None: not comparable, skipped)."""
    if sent is None:
        return
    wrong = [who for who, digest in arrived.items() if digest is not None and digest != sent]
    if wrong:
        raise SyncError(
            f"weight sync: {', '.join(wrong)} received weights whose fingerprint differs from "
            "what the trainer sent (a garbled or partial transfer); stopping before the "
            "rollout samples with them"
        )


def log_prob_gap(batch: Batch, trainer: torch.Tensor, sampler: torch.Tensor) -> float:
    """Mean over response tokens of |log π_old − log μ| (both (B, R))."""
    mask = batch[Field.RESPONSE_MASK].bool()
    if not bool(mask.any()):
        return 0.0
    return float((trainer - sampler).abs()[mask].mean())


def check_gap(gap: float, step: int, bound: float = MAX_LOG_PROB_GAP) -> None:
    """``step``: the 1-based training step that would learn on the batch."""
    if not gap <= bound:  # NaN fails too
        raise SyncError(
            f"weight sync: the first batch sampled after the sync (step {step}) has mean "
            f"|log π_old − log μ| = {gap:.3g} nats per token, over the bound {bound:g} "
            "(runtime/sync/guard.py): the rollout is not sampling with the trainer's weights"
        )
