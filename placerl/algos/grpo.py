"""Critic-free policy optimisation: GRPO (Shao et al. 2024) and RLOO (Ahmadian et al. 2024).

Both sample a group of responses per prompt and use the group as the baseline: GRPO subtracts
the group mean (and divides by the group std unless ``scale_by_std: false``, Dr. GRPO), RLOO
subtracts the mean of the *other* samples. The sequence advantage is given to every token.
A KL term to the reference is a loss (β = ``grpo.kl_coef``), as in DeepSeekMath; with β = 0
no reference model is loaded at all.
"""

from __future__ import annotations

from placerl.algos import core
from placerl.algos.objectives import PolicyObjective
from placerl.algos.online import Needs, Roles, experience_metrics, score
from placerl.algos.registry import ADVANTAGE_ESTIMATORS
from placerl.config.schema import GRPOConfig
from placerl.data.stream import PromptBatch
from placerl.timing import PhaseTimer
from placerl.types import Batch, Field


class GroupPolicyOptimization:
    def __init__(
        self,
        cfg: GRPOConfig,
        estimator: str,
        group_size: int,
        is_cap: float | None = None,
        generation_budget: int | None = None,
    ):
        self.cfg = cfg
        self.estimator = estimator
        self.group_size = group_size
        # π_old of a single-pass update is the current policy: no forward to recompute it for
        # stale samples (runtime/pipeline.py), the update's own forward gives it
        single_pass = cfg.epochs * cfg.minibatches == 1
        self.needs = Needs(
            reference=cfg.kl_coef > 0,
            samples_per_prompt=group_size,
            old_log_probs="update" if single_pass else "trainer",
        )
        self.objective = PolicyObjective(
            clip_low=cfg.clip,
            clip_high=cfg.clip_high or cfg.clip,
            loss_agg=cfg.loss_agg,
            kl_coef=cfg.kl_coef,
            kl_estimator=cfg.kl_estimator,
            skip_uninformative=cfg.skip_uninformative,
            is_cap=is_cap,
            old_from_current=single_pass,
            loss_norm=generation_budget,  # Dr. GRPO's constant (seq-mean-token-sum-norm)
        )

    def experience(
        self, roles: Roles, batch: Batch, prompts: PromptBatch, timer: PhaseTimer
    ) -> Batch:
        """score (→ reference) of a sampled batch: the half of a step that only reads the
        models (the pipeline may have sampled it ahead, runtime/pipeline.py)."""
        return score(roles, batch, prompts, timer)

    def learn(self, roles: Roles, batch: Batch, timer: PhaseTimer, step: int) -> dict[str, float]:
        """Group advantages and the policy update on one batch of experience."""
        with timer.phase("advantages"):
            scores = batch[Field.SCORES]
            if self.estimator == "grpo":
                seq_adv = core.grpo_advantages(scores, self.group_size, self.cfg.scale_by_std)
            else:
                seq_adv = ADVANTAGE_ESTIMATORS.get(self.estimator)(scores, self.group_size)
            batch[Field.ADVANTAGES] = core.expand_to_tokens(seq_adv, batch[Field.RESPONSE_MASK])
        metrics = experience_metrics(batch)
        groups = scores.view(-1, self.group_size)
        metrics["reward/groups_with_signal"] = float(
            (groups.max(-1).values > groups.min(-1).values).float().mean()
        )
        with timer.phase("update"):
            metrics |= roles.actor.update(
                batch, self.objective, self.cfg.epochs, self.cfg.minibatches
            )
        return metrics

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
