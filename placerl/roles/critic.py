"""The critic: per-token values V(s_t) and the value update (PPO only)."""

from __future__ import annotations

import torch

from placerl.algos.objectives import ValueObjective, value_loss
from placerl.config.schema import OptimConfig
from placerl.roles.common import TrainedModel, autocast, response_values
from placerl.types import Batch


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
    ):
        super().__init__(model, optim, total_steps, lr=lr, precision=precision, seed=seed + 29)

    @torch.no_grad()
    def values(self, batch: Batch) -> torch.Tensor:
        self.model.eval()
        with autocast(self.precision):
            return response_values(self.model, batch)

    def update(
        self, batch: Batch, objective: ValueObjective, epochs: int = 1, minibatches: int = 1
    ) -> dict[str, float]:
        def loss_of(mb: Batch):
            return value_loss(response_values(self.model, mb), mb, objective)

        return self.fit(batch, loss_of, epochs, minibatches, prefix="critic")
