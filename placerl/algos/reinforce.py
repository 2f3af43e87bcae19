"""REINFORCE++ and REINFORCE++-baseline (Hu et al. 2025, arXiv 2501.03262) as online algorithms.

The math is algos/reinforce_pp.py: per-token rewards carry −β·KL to the reference (k1 by
default, ``grpo.kl_estimator``) and the score at the last token; returns are discounted
(``reinforce_pp.gamma``) and normalised over the whole step's batch; the baseline variant first
subtracts the group mean of the scores. The update is the ``grpo:`` section's (PPO's clip by
default, ``grpo.policy_loss`` picks another).

Needs: a reference when β > 0, and then π_old *before* the update — the KL in the reward is
log π_old − log π_ref, so a stale batch has its π_old recomputed by the trainer (as PPO's KL
in the reward); without a KL term a single-pass update takes π_old from its own forward.
Advantages are computed on the controller over the whole batch before the runtime splits it,
so the normalisation is global across data-parallel workers by construction.
"""

from __future__ import annotations

from placerl.algos.grpo import policy_objective
from placerl.algos.kl import kl_estimate
from placerl.algos.online import Needs, Roles, experience_metrics, score
from placerl.algos.registry import TOKEN_ADVANTAGE_ESTIMATORS
from placerl.config.policy import GRPOConfig, ReinforcePPConfig
from placerl.data.stream import PromptBatch
from placerl.timing import PhaseTimer
from placerl.types import Batch, Field


class ReinforcePlusPlus:
    def __init__(
        self,
        cfg: GRPOConfig,
        returns: ReinforcePPConfig,
        *,
        baseline: bool,
        group_size: int,
        is_cap: float | None = None,
        generation_budget: int | None = None,
    ):
        self.cfg, self.returns = cfg, returns
        self.baseline, self.group_size = baseline, group_size
        self.kl_estimator = cfg.kl_estimator or "k1"  # the paper's, in the reward
        reference = cfg.kl_coef > 0
        single_pass = cfg.epochs * cfg.minibatches == 1 and not reference
        self.needs = Needs(
            reference=reference,
            samples_per_prompt=group_size,
            old_log_probs="update" if single_pass else "trainer",
        )
        self.objective = policy_objective(
            cfg,
            kl_in_loss=False,
            is_cap=is_cap,
            old_from_current=single_pass,
            generation_budget=generation_budget,
        )

    def experience(
        self, roles: Roles, batch: Batch, prompts: PromptBatch, timer: PhaseTimer
    ) -> Batch:
        """score (→ reference) of a sampled batch."""
        return score(roles, batch, prompts, timer)

    def learn(self, roles: Roles, batch: Batch, timer: PhaseTimer, step: int) -> dict[str, float]:
        """KL-shaped returns, globally normalised advantages, the policy update."""
        with timer.phase("advantages"):
            self.advantages(batch)
        metrics = experience_metrics(batch) | {"kl/coef": self.cfg.kl_coef}
        with timer.phase("update"):
            metrics |= roles.actor.update(
                batch, self.objective, self.cfg.epochs, self.cfg.minibatches
            )
        return metrics

    def advantages(self, batch: Batch) -> None:
        """Fill ADVANTAGES (the returns before normalisation are not kept: no critic)."""
        mask = batch[Field.RESPONSE_MASK]
        kl = None
        if self.needs.reference:
            kl = kl_estimate(
                batch[Field.OLD_LOG_PROBS], batch[Field.REF_LOG_PROBS], self.kl_estimator, mask
            )
        name = "reinforce_pp_baseline" if self.baseline else "reinforce_pp"
        extra = {"recenter": self.returns.recenter} if self.baseline else {}
        advantages, _ = TOKEN_ADVANTAGE_ESTIMATORS.get(name)(
            batch[Field.SCORES],
            mask,
            group_size=self.group_size,
            kl=kl,
            kl_coef=self.cfg.kl_coef,
            gamma=self.returns.gamma,
            **extra,
        )
        batch[Field.ADVANTAGES] = advantages

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
