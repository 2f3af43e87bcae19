"""The actor: the policy being trained. Log-probs of responses and the policy update.

One ``update`` call is one RL step: ``epochs`` passes over the batch, each split into
``minibatches`` optimizer steps; the learning-rate schedule advances once per call, so a
schedule's length is the run's number of steps whatever the minibatch settings.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from placerl.algos.core import NORMED_SUM
from placerl.algos.objectives import PolicyObjective, policy_loss
from placerl.algos.skipping import informative_rows, kept_share
from placerl.config.schema import OptimConfig
from placerl.models.micro_batches import GROUP_MEAN
from placerl.roles.common import TrainedModel, autocast, response_log_probs
from placerl.types import Batch, Field, GroupedObjective


class ActorWorker(TrainedModel):
    def __init__(
        self,
        model,
        optim: OptimConfig,
        total_steps: int,
        *,
        temperature: float = 1.0,
        precision: str = "fp32",
        seed: int = 0,
        share_prefix: bool = True,
        micro_batching=None,
        gradient_checkpointing: bool = False,
    ):
        super().__init__(
            model,
            optim,
            total_steps,
            precision=precision,
            seed=seed + 17,
            micro_batching=micro_batching,
            gradient_checkpointing=gradient_checkpointing,
        )
        self.temperature = temperature
        # a group's shared prompt computed once (roles/common.py); off under FSDP, whose ranks
        # must all run the same forwards whatever their rows
        self.share_prefix = share_prefix

    @torch.no_grad()
    def log_probs(self, batch: Batch) -> torch.Tensor:
        """(B, R) log-probs of the responses under the current policy."""
        self.model.eval()
        with autocast(self.precision):
            log_probs, _ = response_log_probs(
                self.model, batch, self.temperature, share_prefix=self.share_prefix
            )
        return log_probs

    def update(
        self, batch: Batch, objective: PolicyObjective, epochs: int = 1, minibatches: int = 1
    ) -> dict[str, float]:
        """Minimise ``objective`` over the batch; returns mean stats over optimizer steps."""
        self.loss_agg = objective.loss_agg
        if objective.loss_agg == NORMED_SUM and objective.loss_norm is None:
            # the normaliser is a constant of the step, not of a micro-batch's width
            objective = replace(objective, loss_norm=float(batch[Field.RESPONSE_MASK].shape[1]))
        # the entropy only when a bonus uses it, and then with its gradient
        entropy = objective.entropy_coef > 0

        def forward(mb: Batch):
            log_probs, entropies = response_log_probs(
                self.model,
                mb,
                self.temperature,
                with_entropy=entropy,
                entropy_grad=entropy,
                share_prefix=self.share_prefix,
            )
            return policy_loss(log_probs, entropies, mb, objective)

        def loss_of(mb: Batch):
            keep = informative_rows(mb, objective) if objective.skip_uninformative else None
            if keep is None or bool(keep.all()):
                return forward(mb)
            share = kept_share(mb[Field.RESPONSE_MASK], keep, objective.loss_agg)
            stats = {"actor/skipped_share": torch.tensor(1.0 - float(keep.float().mean()))}
            if share == 0.0:  # nothing carries a gradient: a zero gradient, and still a step
                return torch.zeros(()), stats
            loss, kept_stats = forward(mb[keep])
            # losses are reported like the gradient: the full minibatch's, skipped rows adding 0
            kept_stats = {
                k: v * share if k.startswith("loss/") else v for k, v in kept_stats.items()
            }
            return loss * share, kept_stats | stats

        return self.fit(batch, loss_of, epochs, minibatches, prefix="actor")

    def fit_grouped(
        self, batch: Batch, objective: GroupedObjective, epochs: int = 1, minibatches: int = 1
    ) -> dict[str, float]:
        """Minimise ``objective(log_probs, mb)`` over a [G, n] batch of groups (a preference
        pair, or the samples of one prompt, per row): minibatches and micro-batches split
        rows, never a group. ``log_probs`` are the (g, n, R) response log-probs under the
        current policy at ``objective.temperature`` (None: the sampling temperature);
        ``objective`` is a ``GroupedObjective``, a picklable callable (a frozen dataclass,
        e.g. ``PairObjective``) whose loss is a mean over the g groups."""
        self.loss_agg = GROUP_MEAN
        temperature = self.temperature if objective.temperature is None else objective.temperature

        def loss_of(mb: Batch):
            log_probs, _ = response_log_probs(
                self.model, mb.reshape(-1), temperature, share_prefix=self.share_prefix
            )
            return objective(log_probs.view(*mb.batch_size, -1), mb)

        return self.fit(batch, loss_of, epochs, minibatches, prefix="actor")
