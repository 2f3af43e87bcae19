"""The sections of the critic-free policy-optimisation family.

``grpo:`` holds the policy update every critic-free stage shares (the loss, its clip range,
epochs, the KL weight); the others hold what one member adds: REINFORCE++'s returns
(``reinforce_pp:``) and DAPO's dynamic sampling and overlong handling (``dapo:``). The papers'
numbers are in the math modules (placerl/algos/gspo.py, cispo.py, reinforce_pp.py, dapo.py,
dynamic_sampling.py); which loss a run uses is ``grpo.policy_loss``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from placerl.config.section import Section

# the names of algos.registry.POLICY_LOSSES (tests/config checks they agree)
PolicyLoss = Literal["ppo_clip", "gspo", "gspo_token", "cispo"]


class GRPOConfig(Section):
    """The policy update of the critic-free stages (grpo, rloo, dapo, reinforce_pp,
    reinforce_pp_baseline)."""

    policy_loss: PolicyLoss = Field(
        "ppo_clip",
        description="The policy loss: ppo_clip (PPO's clipped token ratio), gspo or gspo_token "
        "(GSPO's clipped sequence ratio, arXiv 2507.18071), cispo (clipped, stop-gradient IS "
        "weights: every token keeps a gradient, arXiv 2506.13585).",
    )
    scale_by_std: bool = Field(True, description="Divide group advantages by the group std.")
    skip_uninformative: bool = Field(
        True,
        description="Leave samples with advantage exactly 0 (groups of equal rewards) out of "
        "the forward/backward when no KL or entropy term needs them; the gradient is the same.",
    )
    kl_coef: float = Field(
        0.0,
        ge=0,
        description="KL weight β; 0 runs no reference model. A loss term, except for "
        "reinforce_pp stages, whose per-token reward carries −β·KL (the paper's).",
    )
    kl_estimator: Literal["k1", "k2", "k3", "abs"] | None = Field(
        None,
        description="Per-token KL estimator; null: k3 as a loss (k1/abs are refused there: "
        "they do not regularise), k1 in the reward (reinforce_pp).",
    )
    epochs: int = Field(1, gt=0, description="Passes over each rollout batch.")
    minibatches: int = Field(1, gt=0, description="Optimizer steps per epoch.")
    clip: float | None = Field(
        None,
        gt=0,
        description="Low clip ε of the ratio; null: the loss's own (ppo_clip 0.2, gspo 3e-4 "
        "(GSPO §5.1), cispo none: no lower bound on its IS weight).",
    )
    clip_high: float | None = Field(
        None,
        gt=0,
        description="High clip ε; null: the loss's own (ppo_clip = clip, 0.28 under dapo "
        "(clip-higher); gspo 4e-4; cispo 0.2).",
    )
    loss_agg: (
        Literal[
            "token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"
        ]
        | None
    ) = Field(
        None,
        description="How per-token losses become one number; null: the loss's own (token-mean; "
        "gspo: seq-mean-token-mean, the paper's mean over sequences).",
    )


class ReinforcePPConfig(Section):
    gamma: float = Field(
        1.0, ge=0, le=1, description="Discount of the per-token returns (the paper's γ = 1)."
    )
    recenter: bool = Field(
        True,
        description="reinforce_pp_baseline: after the group mean, also subtract the batch "
        "mean when normalising (the paper, veRL, OpenRLHF); false divides by the batch std "
        "only, so groups of equal rewards keep advantage exactly 0 and are skipped "
        "(grpo.skip_uninformative).",
    )


class DynamicSamplingConfig(Section):
    enabled: bool = Field(
        True,
        description="Keep only groups whose rewards differ, sampling more prompts until the "
        "batch holds trainer.batch_size of them (DAPO §3.2).",
    )
    max_rounds: int = Field(
        3,
        gt=0,
        description="Most batches of prompts sampled per step, the first included; when they "
        "fall short the batch is topped up with groups of equal rewards (advantage 0: no "
        "gradient), so every step trains on trainer.batch_size groups.",
    )


class OverlongConfig(Section):
    shaping: bool = Field(
        True,
        description="Soft overlong punishment (DAPO eq. 13): a penalty added to the reward, "
        "0 up to max_new_tokens − cache_length tokens, then linear down to −penalty_factor at "
        "rollout.max_new_tokens (and for responses cut by it).",
    )
    cache_length: int | None = Field(
        None,
        gt=0,
        description="Width of the soft band in tokens; null: a fifth of rollout.max_new_tokens "
        "(the paper's 4,096 of 20,480), at least 1.",
    )
    penalty_factor: float = Field(
        1.0, ge=0, description="Scale of the overlong penalty (the paper's 1)."
    )
    filter_truncated: bool = Field(
        False,
        description="Leave responses cut by rollout.max_new_tokens (no end token) out of the "
        "loss (DAPO's overlong filtering); their rewards still count in the group baseline.",
    )


class DAPOConfig(Section):
    dynamic_sampling: DynamicSamplingConfig = Field(default_factory=DynamicSamplingConfig)
    overlong: OverlongConfig = Field(default_factory=OverlongConfig)

    def cache_length(self, max_new_tokens: int) -> int:
        """The soft band's width, resolved against the generation budget."""
        width = self.overlong.cache_length
        return width if width is not None else max(1, max_new_tokens // 5)
