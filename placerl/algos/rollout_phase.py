"""The phases every online algorithm shares: sample, score, reference log-probs.

These run on the controller and only *call* roles; where the roles live is the runtime's
business. Each phase is timed under its name so the step's time breakdown is comparable
across algorithms and placements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from placerl.algos import core
from placerl.data.stream import PromptBatch
from placerl.runtime.futures import submit
from placerl.timing import PhaseTimer
from placerl.types import Batch, Field


@dataclass
class Roles:
    """Handles to the roles of one run; any may be absent when the algorithm needs none."""

    rollout: Any
    actor: Any
    reward: Any
    reference: Any | None = None
    critic: Any | None = None


def sample_and_score(roles: Roles, prompts: PromptBatch, timer: PhaseTimer) -> Batch:
    """generate → score → reference: the experience every online algorithm starts from.

    Scoring and reference log-probs both only read the sampled batch, so both are started
    before either is awaited: roles on disjoint workers (Interleave) compute them at the same
    time; local roles run each on demand, in the phase that awaits it.
    """
    with timer.phase("generate"):
        batch = roles.rollout.generate(prompts.ids, prompts.mask)
    scores = submit(roles.reward, "score", batch, prompts.as_given(), prompts.columns)
    reference = submit(roles.reference, "log_probs", batch) if roles.reference is not None else None
    with timer.phase("score"):
        batch[Field.SCORES] = scores.result()
    if reference is not None:
        with timer.phase("reference"):
            batch[Field.REF_LOG_PROBS] = reference.result()
    return batch


def experience_metrics(batch: Batch) -> dict[str, float]:
    """Reward, length and KL-to-reference statistics of one batch of experience."""
    mask = batch[Field.RESPONSE_MASK]
    scores = batch[Field.SCORES]
    lengths = mask.sum(-1).float()
    metrics = {
        "reward/mean": float(scores.mean()),
        "reward/std": float(scores.std()) if scores.numel() > 1 else 0.0,
        "response/length": float(lengths.mean()),
        "throughput/tokens": int(batch[Field.ATTENTION_MASK].sum()),  # prompt + response
    }
    if Field.REF_LOG_PROBS in batch.keys():  # noqa: SIM118 (TensorDict has no `in`)
        kl = core.kl_estimate(batch[Field.OLD_LOG_PROBS], batch[Field.REF_LOG_PROBS], "k1", mask)
        metrics["kl/mean"] = float(kl.sum(-1).mean())  # per sequence, in nats
    # entropy of the sampling policy is estimated by −log π of the sampled tokens
    metrics["rollout/neg_log_prob"] = float(-core.masked_mean(batch[Field.OLD_LOG_PROBS], mask))
    return metrics
