"""Config sections of the preference-optimization stages (dpo, online_dpo, rso, brain).

One section per concern: ``preference`` is the loss shared by every DPO-family stage; ``rso``
and ``brain`` hold what only those sampling schemes need.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from placerl.config.section import Section


class PreferenceConfig(Section):
    loss: Literal["dpo", "slic", "ipo"] = Field(
        "dpo",
        description="dpo: −log σ(β·Δ) (sigmoid); slic: relu(margin − β·Δ) (hinge); ipo: "
        "(Δ − 1/(2β))² on per-token mean log-probs. Δ: chosen minus rejected log-ratio to π_ref.",
    )
    beta: float = Field(0.1, gt=0, description="β: strength of the pull toward the reference.")
    reference: Literal["cached", "online"] = Field(
        "cached",
        description="cached: reference log-probs computed once per example, the first time "
        "training meets it, then kept (in checkpoints too); the reference model is freed once "
        "every example has its value. online: recomputed every step with the reference model.",
    )
    margin: float = Field(
        1.0, gt=0, description="SLiC's hinge margin δ in relu(δ − β·Δ) (loss: slic only)."
    )
    sft_coef: float = Field(
        0.0,
        ge=0,
        description="Weight λ of the SFT regularizer λ·NLL(chosen) (per-token mean), SLiC-HF "
        "style; any loss.",
    )
    label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=0.5,
        description="Conservative DPO ε: the chance a label is flipped (loss: dpo only).",
    )
    over_length: Literal["truncate", "error"] = Field(
        "truncate",
        description="Pairs longer than data.max_len: truncate cuts the responses to fit (the "
        "count is printed at start and logged as data/truncated), error refuses the data.",
    )

    @model_validator(mode="after")
    def _options_of_the_loss(self) -> PreferenceConfig:
        if self.label_smoothing and self.loss != "dpo":
            raise ValueError(
                f"preference.label_smoothing={self.label_smoothing} applies to loss: dpo only "
                f"(got loss: {self.loss})"
            )
        if self.margin != 1.0 and self.loss != "slic":
            raise ValueError(
                f"preference.margin={self.margin} applies to loss: slic only (got loss: "
                f"{self.loss})"
            )
        return self


class RSOConfig(Section):
    """Statistical rejection sampling optimization (Liu et al. 2023, "RSO")."""

    num_candidates: int = Field(
        8, ge=2, description="Responses sampled per prompt from the SFT policy (N; paper: 64)."
    )
    num_accepted: int = Field(
        4, ge=2, description="Responses kept per prompt by rejection sampling (k; paper: 8)."
    )
    beta: float = Field(
        0.5, gt=0, description="Temperature of the target π* ∝ π_sft·exp(r/β) for acceptance."
    )
    ranking: Literal["first_round", "tournament"] = Field(
        "first_round",
        description="Pairs from the k accepted: first_round pairs (1,2), (3,4), … (k/2 pairs); "
        "tournament plays on until one winner (k−1 pairs). Labels: higher reward wins.",
    )
    epochs: int = Field(1, gt=0, description="Passes over each step's pairs.")
    minibatches: int = Field(1, gt=0, description="Optimizer steps per epoch.")

    @model_validator(mode="after")
    def _accepted_fit(self) -> RSOConfig:
        if self.num_accepted > self.num_candidates:
            raise ValueError(
                f"rso.num_accepted ({self.num_accepted}) cannot exceed rso.num_candidates "
                f"({self.num_candidates}): samples are accepted without replacement"
            )
        return self


class BRAInConfig(Section):
    """BRAIn (Pandey et al. 2024): distil the reward-conditioned posterior by self-normalized
    importance sampling, with the self-normalized baseline."""

    num_samples: int = Field(8, ge=2, description="Proposal samples per prompt (n).")
    beta: float = Field(
        1.0, gt=0, description="Temperature of the posterior ∝ π_sft·exp(r/β) that is distilled."
    )
    proposal: Literal["sft", "policy"] = Field(
        "sft",
        description="Who samples: sft (the frozen initial policy, as in the paper) or policy "
        "(the trained policy, a snapshot at most placement.max_staleness updates old).",
    )
    epochs: int = Field(1, gt=0, description="Passes over each step's samples.")
    minibatches: int = Field(1, gt=0, description="Optimizer steps per epoch (split by prompt).")


class OnlineDPOConfig(Section):
    """Online DPO (Guo et al. 2024): pairs sampled from the (possibly stale) policy each step,
    ranked by the reward; rollout.samples_per_prompt responses per prompt."""

    pairs_per_prompt: int = Field(
        1,
        ge=1,
        description="Pairs per prompt: best vs worst, then 2nd best vs 2nd worst, …; at most "
        "samples_per_prompt // 2. Pairs with equal rewards are skipped (counted as ties).",
    )
    epochs: int = Field(1, gt=0, description="Passes over each step's pairs.")
    minibatches: int = Field(1, gt=0, description="Optimizer steps per epoch.")
