"""The online ``Algorithm`` protocol, the roles it calls, and the phases every one shares.

An online algorithm is two halves the experience pipeline (runtime/pipeline.py) runs for it:

- ``experience(roles, batch, prompts, timer)``: what only *reads* the models once a batch is
  sampled (scores, reference log-probs, values);
- ``learn(roles, batch, timer, step)``: advantages, pairs or weights, and the updates.

Sampling is not the algorithm's: the pipeline launches it, possibly ahead, with a rollout
that follows the trained policy within ``max_staleness`` updates or, for a frozen proposal,
never moves. What the algorithm needs from the runtime it declares as data, in ``Needs``; the
runtime and pipeline read that, never the algorithm's class.

The roles are called, never placed: ``Roles`` holds whatever the runtime built (local objects
or handles to Ray workers) behind the small protocols below. This module imports nothing from
the runtime or the roles package (tests/test_layering.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from torch import Tensor, nn

from placerl.algos import core
from placerl.algos.kl import kl_metrics
from placerl.data.stream import PromptBatch
from placerl.rollout.stop_reasons import stop_metrics
from placerl.timing import PhaseTimer
from placerl.types import Batch, Field, GroupedObjective

# Which π_old a policy update accepts for a batch sampled by a lagging (or other) sampler μ:
#   trainer: the trainer recomputes π_old (μ kept as ROLLOUT_LOG_PROBS; truncated IS weights);
#   update:  a single-pass update (1 epoch × 1 minibatch) takes π_old from its own forward;
#   sampler: the update reads the sampler's log-probs as they are (preference losses use the
#            reference instead; BRAIn's proposal q *is* the sampler).
OldLogProbs = Literal["trainer", "update", "sampler"]
# Who samples: the trained policy (synced, at most max_staleness updates old), or the initial
# policy, frozen: a rollout that is never synced (RSO, BRAIn with proposal sft).
Proposal = Literal["policy", "initial"]


@dataclass(frozen=True)
class Needs:
    """What an online algorithm needs from the runtime and the pipeline."""

    reference: bool = False  # a frozen reference model (KL term, preference losses, a prior)
    critic: bool = False  # a value model (PPO)
    samples_per_prompt: int = 1  # responses sampled per prompt
    proposal: Proposal = "policy"
    old_log_probs: OldLogProbs = "trainer"


class Pending(Protocol):
    """A call that may still be running (a Ray call; a local call deferred until asked)."""

    def result(self) -> Any: ...


class Rollout(Protocol):
    # what the pipeline calls: one response per prompt, or one episode per prompt row
    def sample(self, prompts: PromptBatch) -> Batch: ...

    def generate(self, prompt_ids: Tensor, prompt_mask: Tensor) -> Batch: ...


class Reward(Protocol):
    def score_async(self, batch: Batch, prompts: list, columns: dict[str, list]) -> Pending: ...


class Reference(Protocol):
    # at ``temperature`` (None: the sampling temperature)
    def log_probs(self, batch: Batch, temperature: float | None = None) -> Tensor: ...

    def log_probs_async(self, batch: Batch, temperature: float | None = None) -> Pending: ...


class Trained(Protocol):
    model: nn.Module  # the controller's copy (evaluation, checkpoints)

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class Actor(Trained, Protocol):
    def log_probs(self, batch: Batch) -> Tensor: ...

    def update(self, batch: Batch, objective, epochs: int, minibatches: int) -> dict: ...

    def fit_grouped(
        self, batch: Batch, objective: GroupedObjective, epochs: int, minibatches: int
    ) -> dict: ...


class Critic(Trained, Protocol):
    def values(self, batch: Batch) -> Tensor: ...

    def update(self, batch: Batch, objective, epochs: int, minibatches: int) -> dict: ...


@dataclass
class Roles:
    """The roles of one run, as the runtime built them; absent ones are None."""

    rollout: Rollout
    actor: Actor
    reward: Reward
    reference: Reference | None = None
    critic: Critic | None = None


class Algorithm(Protocol):
    """An online algorithm: ``experience`` then ``learn`` on each sampled batch."""

    needs: Needs

    def experience(
        self, roles: Roles, batch: Batch, prompts: PromptBatch, timer: PhaseTimer
    ) -> Batch: ...

    def learn(self, roles: Roles, batch: Batch, timer: PhaseTimer, step: int) -> dict: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def score(
    roles: Roles, batch: Batch, prompts: PromptBatch, timer: PhaseTimer, reference: bool = True
) -> Batch:
    """score (→ reference log-probs): the experience every online algorithm starts from.

    Both only read the sampled batch, so both are started before either is awaited: roles on
    disjoint workers (Interleave) compute them at the same time; local roles run each on
    demand, in the phase that awaits it. ``reference=False`` leaves the reference to the
    algorithm (preference pairs ask it for the paired responses alone).
    """
    scores = roles.reward.score_async(batch, prompts.as_given(), prompts.columns)
    ref = roles.reference.log_probs_async(batch) if reference and roles.reference else None
    with timer.phase("score"):
        batch[Field.SCORES] = scores.result()
    if ref is not None:
        with timer.phase("reference"):
            batch[Field.REF_LOG_PROBS] = ref.result()
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
    if Field.STOP_REASON in batch.keys():  # noqa: SIM118 (set by the rollout role)
        metrics |= stop_metrics(batch[Field.STOP_REASON])
    if Field.REF_LOG_PROBS in batch.keys():  # noqa: SIM118 (TensorDict has no `in`)
        metrics |= kl_metrics(batch[Field.OLD_LOG_PROBS], batch[Field.REF_LOG_PROBS], mask)
    # entropy of the sampling policy is estimated by −log π of the sampled tokens
    metrics["rollout/neg_log_prob"] = float(-core.masked_mean(batch[Field.OLD_LOG_PROBS], mask))
    return metrics
