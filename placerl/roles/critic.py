"""The critic: per-token values V(s_t) and the value update (PPO only)."""

from __future__ import annotations

from dataclasses import replace

import torch

from placerl.algos.core import NORMED_SUM
from placerl.algos.objectives import ValueObjective, value_loss
from placerl.config.schema import OptimConfig
from placerl.roles.common import TrainedModel, autocast, response_values
from placerl.types import Batch, Field


class CriticWorker(TrainedModel):
    def __init__(
        self,
        model,
        optim: OptimConfig,
        total_steps: int,
        *,
        lr: float | None = None,
        precision: str = "fp32",
        seed: int = 0,
        micro_batching=None,
        gradient_checkpointing: bool = False,
    ):
        super().__init__(
            model,
            optim,
            total_steps,
            lr=lr,
            precision=precision,
            seed=seed + 29,
            micro_batching=micro_batching,
            gradient_checkpointing=gradient_checkpointing,
        )

    @torch.no_grad()
    def values(self, batch: Batch) -> torch.Tensor:
        self.model.eval()
        with autocast(self.precision):
            return response_values(self.model, batch)

    def update(
        self, batch: Batch, objective: ValueObjective, epochs: int = 1, minibatches: int = 1
    ) -> dict[str, float]:
        self.loss_agg = objective.loss_agg
        if objective.loss_agg == NORMED_SUM and objective.loss_norm is None:
            objective = replace(objective, loss_norm=float(batch[Field.RESPONSE_MASK].shape[1]))

        def loss_of(mb: Batch):
            return value_loss(response_values(self.model, mb), mb, objective)

        return self.fit(batch, loss_of, epochs, minibatches, prefix="critic")
