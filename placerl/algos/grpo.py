"""Critic-free policy optimisation over groups: GRPO (Shao et al. 2024), RLOO (Ahmadian et al.
2024) and DAPO (Yu et al. 2025, arXiv 2503.14476); any of them with GSPO's or CISPO's loss.

All sample a group of responses per prompt and use the group as the baseline: GRPO subtracts
the group mean (and divides by the group std unless ``scale_by_std: false``, Dr. GRPO), RLOO
subtracts the mean of the *other* samples. The sequence advantage is given to every token.
A KL term to the reference is a loss (β = ``grpo.kl_coef``), as in DeepSeekMath; with β = 0
no reference model is loaded at all. The loss is ``grpo.policy_loss`` (``policy_objective``):
PPO's clipped token ratio, GSPO's sequence ratio, or CISPO's clipped IS weight.

DAPO is GRPO with its four parts: clip-higher (ε_high 0.28 unless ``grpo.clip_high`` says
otherwise), the token-level loss (token-mean), dynamic sampling — declared as a need
(``Needs.signal_rounds``): the pipeline samples more prompts until the batch holds
``trainer.batch_size`` groups whose rewards differ (runtime/pipeline.py) — and overlong
shaping (algos/dapo.py: the soft penalty is added to the scores before the advantages; the
filter and ``reward/mean`` keep the task reward; truncated samples can be masked out of the
loss). Departures from the paper are in algos/dapo.py and algos/dynamic_sampling.py.
"""

from __future__ import annotations

from placerl.algos import cispo, core, dapo, gspo
from placerl.algos.dapo import OverlongShaping
from placerl.algos.objectives import PolicyObjective
from placerl.algos.online import Needs, Roles, experience_metrics, score
from placerl.algos.registry import ADVANTAGE_ESTIMATORS
from placerl.config.policy import GRPOConfig
from placerl.data.stream import PromptBatch
from placerl.timing import PhaseTimer
from placerl.types import Batch, Field

# loss → (clip_low, clip_high, aggregation) when the config leaves them null; clip_high None
# is "= clip_low" (symmetric PPO clipping)
LOSS_DEFAULTS: dict[str, tuple[float | None, float | None, str]] = {
    "ppo_clip": (0.2, None, "token-mean"),
    "gspo": (gspo.GSPO_CLIP_LOW, gspo.GSPO_CLIP_HIGH, gspo.GSPO_AGG),
    "gspo_token": (gspo.GSPO_CLIP_LOW, gspo.GSPO_CLIP_HIGH, gspo.GSPO_AGG),
    "cispo": (cispo.CISPO_CLIP_LOW, cispo.CISPO_CLIP_HIGH, cispo.CISPO_AGG),
}


def policy_objective(
    cfg: GRPOConfig,
    *,
    clip_higher: bool = False,
    kl_in_loss: bool = True,
    is_cap: float | None = None,
    old_from_current: bool = False,
    generation_budget: int | None = None,
) -> PolicyObjective:
    """The update's objective from the ``grpo:`` section, null settings resolved per loss
    (``LOSS_DEFAULTS``; ``clip_higher``: DAPO's ε_high 0.28 for ppo_clip)."""
    low, high, agg = LOSS_DEFAULTS[cfg.policy_loss]
    low = cfg.clip if cfg.clip is not None else low
    if clip_higher and cfg.policy_loss == "ppo_clip":
        high = dapo.DAPO_CLIP_HIGH
    high = cfg.clip_high or high or low
    return PolicyObjective(
        loss=cfg.policy_loss,
        clip_low=low,
        clip_high=high,
        loss_agg=cfg.loss_agg or agg,
        kl_coef=cfg.kl_coef if kl_in_loss else 0.0,
        kl_estimator=cfg.kl_estimator or "k3",
        skip_uninformative=cfg.skip_uninformative,
        is_cap=is_cap,
        old_from_current=old_from_current,
        loss_norm=generation_budget,  # Dr. GRPO's constant (seq-mean-token-sum-norm)
    )


class GroupPolicyOptimization:
    def __init__(
        self,
        cfg: GRPOConfig,
        estimator: str,
        group_size: int,
        is_cap: float | None = None,
        generation_budget: int | None = None,
        *,
        overlong: OverlongShaping | None = None,
        signal_rounds: int = 0,
        clip_higher: bool = False,
    ):
        self.cfg = cfg
        self.estimator = estimator
        self.group_size = group_size
        self.overlong = overlong
        # π_old of a single-pass update is the current policy: no forward to recompute it for
        # stale samples (runtime/pipeline.py), the update's own forward gives it
        single_pass = cfg.epochs * cfg.minibatches == 1
        self.needs = Needs(
            reference=cfg.kl_coef > 0,
            samples_per_prompt=group_size,
            old_log_probs="update" if single_pass else "trainer",
            signal_rounds=signal_rounds,
        )
        self.objective = policy_objective(
            cfg,
            clip_higher=clip_higher,
            is_cap=is_cap,
            old_from_current=single_pass,
            generation_budget=generation_budget,
        )

    def experience(
        self, roles: Roles, batch: Batch, prompts: PromptBatch, timer: PhaseTimer
    ) -> Batch:
        """score (→ reference) of a sampled batch: the half of a step that only reads the
        models (the pipeline may have sampled it ahead, runtime/pipeline.py)."""
        return score(roles, batch, prompts, timer)

    def learn(self, roles: Roles, batch: Batch, timer: PhaseTimer, step: int) -> dict[str, float]:
        """Group advantages and the policy update on one batch of experience."""
        metrics: dict[str, float] = {}
        with timer.phase("advantages"):
            scores = batch[Field.SCORES]
            if self.overlong is not None:
                scores, metrics = self.overlong.shaped_scores(batch)
            if self.estimator == "grpo":
                seq_adv = core.grpo_advantages(scores, self.group_size, self.cfg.scale_by_std)
            else:
                seq_adv = ADVANTAGE_ESTIMATORS.get(self.estimator)(scores, self.group_size)
            batch[Field.ADVANTAGES] = core.expand_to_tokens(seq_adv, batch[Field.RESPONSE_MASK])
        metrics |= experience_metrics(batch)
        groups = scores.view(-1, self.group_size)
        metrics["reward/groups_with_signal"] = float(
            (groups.max(-1).values > groups.min(-1).values).float().mean()
        )
        update = batch if self.overlong is None else self.overlong.loss_batch(batch)
        with timer.phase("update"):
            metrics |= roles.actor.update(
                update, self.objective, self.cfg.epochs, self.cfg.minibatches
            )
        return metrics

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
