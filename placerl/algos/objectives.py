"""The losses the actor and critic minimise on one minibatch, assembled from ``core``.

Kept apart from the roles so the math stays tensors-in, tensors-out: a role runs the loop
(epochs × minibatches, backward, clip, step); these functions say what is being minimised.

The policy loss is picked by name from ``registry.POLICY_LOSSES`` (``PolicyObjective.loss``:
ppo_clip, gspo, gspo_token, cispo). Stale samples carry the sampler's log-probs μ and get
truncated importance weights π_old/μ: per token for token-level losses
(``core.truncated_importance_weights``), per sequence for GSPO's sequence-level ratio — the
length-normalised geometric mean of the token weights, truncated
(``gspo.sequence_importance_weights``; algos/gspo.py says why). With a single-pass update
(π_old from the update's own forward) GSPO's ratio is exactly 1 and that weight carries the
whole off-policy correction.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from placerl.algos import core, gspo
from placerl.algos.kl import kl_estimate, kl_loss_refusal
from placerl.algos.registry import POLICY_LOSSES
from placerl.types import Batch, Field

# losses whose ratio is one per sequence: their stale samples get one IS weight per sequence
SEQUENCE_LEVEL_LOSSES = frozenset({"gspo", "gspo_token"})


@dataclass(frozen=True)
class PolicyObjective:
    """Policy loss (``loss``, from POLICY_LOSSES) + optional KL-to-reference loss − entropy
    bonus."""

    loss: str = "ppo_clip"  # a name of registry.POLICY_LOSSES
    clip_low: float | None = 0.2  # None: no lower bound (cispo only)
    clip_high: float = 0.2
    loss_agg: str = "token-mean"
    kl_coef: float = 0.0  # > 0: KL(π‖π_ref) as a loss term (GRPO style); needs REF_LOG_PROBS
    kl_estimator: str = "k3"
    entropy_coef: float = 0.0
    # cap of the truncated importance weights applied when the batch carries the sampler's
    # ROLLOUT_LOG_PROBS (stale samples; core.truncated_importance_weights). None: no IS weights
    is_cap: float | None = None
    skip_uninformative: bool = False  # leave zero-advantage samples out (algos/skipping.py)
    # the update is a single pass (1 epoch × 1 minibatch), so π_old — the policy before the
    # update — is the policy of this very forward: for stale samples (ROLLOUT_LOG_PROBS present)
    # take it from here, detached, instead of a separate forward (runtime/pipeline.py)
    old_from_current: bool = False
    # seq-mean-token-sum-norm's constant: the generation budget rollout.max_new_tokens
    loss_norm: float | None = None

    def __post_init__(self):
        POLICY_LOSSES.get(self.loss)  # an unknown name fails here, naming the known ones
        if self.clip_low is None and self.loss != "cispo":
            raise ValueError(f"policy loss {self.loss} needs a lower clip (clip_low=None)")
        if self.kl_coef > 0 and (why := kl_loss_refusal(self.kl_estimator)):
            raise ValueError(why)

    @property
    def is_level(self) -> str:
        """Where stale samples' truncated IS weights apply: per token or per sequence."""
        return "sequence" if self.loss in SEQUENCE_LEVEL_LOSSES else "token"


def policy_loss(
    log_probs: Tensor, entropy: Tensor | None, batch: Batch, spec: PolicyObjective
) -> tuple[Tensor, dict[str, Tensor]]:
    """Loss of one minibatch given the current (B, R) log-probs (and entropy) of its responses."""
    mask = batch[Field.RESPONSE_MASK]
    stale = Field.ROLLOUT_LOG_PROBS in batch.keys()  # noqa: SIM118 (TensorDict has no `in`)
    old_log_probs = batch[Field.OLD_LOG_PROBS]
    if stale and spec.old_from_current:
        old_log_probs = log_probs.detach()
    is_weights, is_stats = None, {}
    if spec.is_cap is not None and stale:
        weigh = (
            gspo.sequence_importance_weights
            if spec.is_level == "sequence"
            else core.truncated_importance_weights
        )
        is_weights, is_stats = weigh(
            old_log_probs, batch[Field.ROLLOUT_LOG_PROBS], mask, spec.is_cap
        )
    loss, stats = POLICY_LOSSES.get(spec.loss)(
        log_probs,
        old_log_probs,
        batch[Field.ADVANTAGES],
        mask,
        clip_low=spec.clip_low,
        clip_high=spec.clip_high,
        agg=spec.loss_agg,
        is_weights=is_weights,
        norm=spec.loss_norm,
    )
    stats = {f"actor/{k}": v for k, v in (stats | is_stats).items()}
    stats["loss/policy"] = loss.detach()
    if spec.kl_coef > 0:
        kl = kl_estimate(log_probs, batch[Field.REF_LOG_PROBS], spec.kl_estimator, mask)
        kl_loss = core.aggregate_loss(kl, mask, spec.loss_agg, spec.loss_norm)
        loss = loss + spec.kl_coef * kl_loss
        stats["loss/kl"] = kl_loss.detach()
    if entropy is not None:
        mean_entropy = core.masked_mean(entropy, mask)
        stats["actor/entropy"] = mean_entropy.detach()
        if spec.entropy_coef > 0:
            bonus = core.aggregate_loss(entropy, mask, spec.loss_agg, spec.loss_norm)
            loss = loss - spec.entropy_coef * bonus
    return loss, stats


@dataclass(frozen=True)
class ValueObjective:
    clip: float | None = 0.2
    loss_agg: str = "token-mean"
    coef: float = 0.5
    loss_norm: float | None = None  # seq-mean-token-sum-norm's constant (PolicyObjective)


def value_loss(
    values: Tensor, batch: Batch, spec: ValueObjective
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss of one minibatch given the current (B, R) values."""
    loss, stats = core.value_loss_clipped(
        values,
        batch[Field.VALUES],
        batch[Field.RETURNS],
        batch[Field.RESPONSE_MASK],
        clip=spec.clip,
        agg=spec.loss_agg,
        norm=spec.loss_norm,
    )
    stats = {f"critic/{k}": v for k, v in stats.items()}
    stats["loss/value"] = loss.detach()
    return spec.coef * loss, stats
