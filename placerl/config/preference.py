"""Config sections of the preference-optimization stages (dpo, online_dpo, rso, brain).

One section per concern: ``preference`` is the loss shared by every DPO-family stage; ``rso``
and ``brain`` hold what only those sampling schemes need.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from placerl.config.section import Section


class PreferenceConfig(Section):
    loss: Literal["dpo", "slic", "ipo"] = Field(
        "dpo", description="dpo (sigmoid), slic (hinge with margin), ipo (squared)."
    )
    beta: float = Field(0.1, gt=0, description="β: strength of the pull toward the reference.")
    reference: Literal["cached", "online"] = Field(
        "cached",
        description="cached: reference log-probs computed once per example and kept; "
        "online: recomputed every step with the reference model.",
    )


class RSOConfig(Section):
    num_candidates: int = Field(8, ge=2, description="Responses sampled per prompt (N).")
    beta: float = Field(
        0.5, gt=0, description="Temperature of the target π* ∝ π_sft·exp(r/β) for acceptance."
    )


class BRAInConfig(Section):
    num_samples: int = Field(8, ge=2, description="Proposal samples per prompt.")


class OnlineDPOConfig(Section):
    pairs_per_prompt: int = Field(1, ge=1, description="Preference pairs built per prompt.")
