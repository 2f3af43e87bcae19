"""The ``staleness:`` section: how training copes with samples from an older policy.

``placement.max_staleness`` says how many updates a sample may lag (0: synchronous on-policy
training); this section says how the lag is produced and corrected: how often the trainer's
weights reach the rollout copy, and how stale samples are reweighted. With
``max_staleness: 0`` none of it changes a single bit of training.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from placerl.config.section import Section


class StalenessConfig(Section):
    sync_every: int | None = Field(
        None,
        ge=1,
        description="Send the trainer's weights to the rollout copy every n updates; null: "
        "only when a sample would otherwise exceed placement.max_staleness (so a bound >= "
        "trainer.steps samples with the first policy throughout: offline).",
    )
    is_cap: float | None = Field(
        2.0,
        gt=0,
        description="Cap of the per-token truncated importance weights min(π_old/μ, cap) that "
        "correct stale samples (IMPALA's ρ̄; 2 as in truncated-IS for LLM RL); null: no "
        "weights, the PPO ratio alone.",
    )
    recompute_log_probs: Literal["auto", "stale", "always"] = Field(
        "auto",
        description="When the trainer recomputes π_old instead of using the sampler's "
        "log-probs: stale (only for samples that lag), always (also corrects a sampler that "
        "differs numerically, e.g. another precision; costs a forward pass each step, except for a "
        "single-pass update (1 epoch × 1 minibatch), whose own forward gives π_old), auto "
        "(always with model.precision bf16, where a KV-cache decode and the trainer's forward "
        "round differently, so the first PPO ratio of a batch is 1; else stale).",
    )
    sync_bucket_mb: float = Field(
        64.0,
        gt=0,
        description="Bucket size of trainer → rollout weight broadcasts (peak extra memory).",
    )
