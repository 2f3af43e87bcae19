"""PPO with four models (Ouyang et al. 2022, "InstructGPT"; Ziegler et al. 2019).

One step: sample → score with the reward (model or rule) → reference log-probs → critic values
→ per-token rewards (score at the last token, −β·KL at every token) → GAE → whitened
advantages → clipped policy update and clipped value update → KL controller update.

Departures: the "old" log-probs are the ones the sampler computed (same weights, same
temperature), which saves the actor a forward pass; with bf16 or several epochs the ratio
still starts at ~1. ``kl_in_reward: false`` moves the KL from the reward into the loss, with
the k3 estimator by default (k1 and abs are refused there: their gradient does not pull
toward the reference, ``kl_loss_refusal``).
"""

from __future__ import annotations

from placerl.algos import core
from placerl.algos.kl import kl_estimate, token_rewards_from_scores
from placerl.algos.kl_control import make_kl_controller
from placerl.algos.objectives import PolicyObjective, ValueObjective
from placerl.algos.online import Needs, Roles, experience_metrics, score
from placerl.config.schema import PPOConfig
from placerl.data.stream import PromptBatch
from placerl.timing import PhaseTimer
from placerl.types import Batch, Field


class PPO:
    def __init__(
        self,
        cfg: PPOConfig,
        is_cap: float | None = None,
        generation_budget: int | None = None,
        samples_per_prompt: int = 1,
    ):
        self.cfg = cfg
        # null: k1 in the reward (InstructGPT), k3 as a loss (k1's gradient does not regularise)
        self.kl_estimator = cfg.kl_estimator or ("k1" if cfg.kl_in_reward else "k3")
        reference = cfg.kl_coef > 0
        # π_old of a single-pass update is the current policy, unless the KL-in-reward needs
        # it before the update (runtime/pipeline.py; GroupPolicyOptimization likewise)
        single_pass = cfg.epochs * cfg.minibatches == 1 and not (reference and cfg.kl_in_reward)
        self.needs = Needs(
            reference=reference,
            critic=True,
            samples_per_prompt=samples_per_prompt,
            old_log_probs="update" if single_pass else "trainer",
        )
        self.kl_ctl = make_kl_controller(
            cfg.kl_controller, cfg.kl_coef, target=cfg.kl_target, horizon=cfg.kl_horizon
        )
        self.policy_objective = PolicyObjective(
            clip_low=cfg.clip,
            clip_high=cfg.clip_high or cfg.clip,
            loss_agg=cfg.loss_agg,
            kl_coef=0.0 if cfg.kl_in_reward else cfg.kl_coef,
            kl_estimator=self.kl_estimator,
            entropy_coef=cfg.entropy_coef,
            is_cap=is_cap,
            old_from_current=single_pass,
            loss_norm=generation_budget,
        )
        self.value_objective = ValueObjective(
            clip=cfg.value_clip,
            loss_agg=cfg.loss_agg,
            coef=cfg.vf_coef,
            loss_norm=generation_budget,
        )

    def experience(
        self, roles: Roles, batch: Batch, prompts: PromptBatch, timer: PhaseTimer
    ) -> Batch:
        """score → reference → values of a sampled batch: the half of a step that only
        reads the models (the pipeline may have sampled it ahead, runtime/pipeline.py)."""
        batch = score(roles, batch, prompts, timer, reference=self.needs.reference)
        with timer.phase("values"):
            batch[Field.VALUES] = roles.critic.values(batch)
        return batch

    def learn(self, roles: Roles, batch: Batch, timer: PhaseTimer, step: int) -> dict[str, float]:
        """Rewards, GAE, the critic and policy updates, the KL controller, on one batch."""
        with timer.phase("advantages"):
            kl_metrics = self.compute_advantages(batch)
        metrics = experience_metrics(batch) | kl_metrics
        with timer.phase("update"):
            metrics |= roles.critic.update(
                batch, self.value_objective, self.cfg.epochs, self.cfg.minibatches
            )
            if step >= self.cfg.critic_warmup_steps:
                metrics |= roles.actor.update(
                    batch, self.policy_objective, self.cfg.epochs, self.cfg.minibatches
                )
        if "kl/mean" in metrics:
            self.kl_ctl.update(metrics["kl/mean"], batch.batch_size[0])
        return metrics

    def compute_advantages(self, batch: Batch) -> dict[str, float]:
        """Fill TOKEN_REWARDS, ADVANTAGES and RETURNS; returns the KL coefficient used."""
        cfg, mask = self.cfg, batch[Field.RESPONSE_MASK]
        kl = None
        if self.needs.reference and cfg.kl_in_reward:
            kl = kl_estimate(
                batch[Field.OLD_LOG_PROBS], batch[Field.REF_LOG_PROBS], self.kl_estimator, mask
            )
        coef = self.kl_ctl.value
        rewards = token_rewards_from_scores(batch[Field.SCORES], mask, kl, coef)
        advantages, returns = core.compute_gae(
            rewards, batch[Field.VALUES], mask, cfg.gamma, cfg.lam
        )
        if cfg.whiten_advantages:
            advantages = core.masked_whiten(advantages, mask)
        batch[Field.TOKEN_REWARDS] = rewards
        batch[Field.ADVANTAGES] = advantages
        batch[Field.RETURNS] = returns
        return {
            "kl/coef": coef,
            "critic/values": float(core.masked_mean(batch[Field.VALUES], mask)),
            "critic/returns": float(core.masked_mean(returns, mask)),
        }

    def state_dict(self) -> dict:
        return {"kl_ctl": self.kl_ctl.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.kl_ctl.load_state_dict(state["kl_ctl"])
