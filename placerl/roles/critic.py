"""The critic: per-token values V(s_t) and the value update (PPO only)."""

from __future__ import annotations

from collections import defaultdict

import torch

from placerl.algos.objectives import ValueObjective, value_loss
from placerl.config.schema import OptimConfig
from placerl.roles.common import (
    autocast,
    clip_and_step,
    make_optimizer,
    minibatch_indices,
    response_values,
)
from placerl.types import Batch


class CriticWorker:
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
        self.model = model
        self.optim_cfg = optim
        self.precision = precision
        self.optimizer, self.scheduler = make_optimizer(model.parameters(), optim, total_steps, lr)
        self.shuffle = torch.Generator().manual_seed(seed + 29)

    @torch.no_grad()
    def values(self, batch: Batch) -> torch.Tensor:
        self.model.eval()
        with autocast(self.precision):
            return response_values(self.model, batch)

    def update(
        self, batch: Batch, objective: ValueObjective, epochs: int = 1, minibatches: int = 1
    ) -> dict[str, float]:
        self.model.train()
        sums: dict[str, float] = defaultdict(float)
        count = 0
        for _ in range(epochs):
            for idx in minibatch_indices(batch.batch_size[0], minibatches, self.shuffle):
                mb = batch[idx]
                with autocast(self.precision):
                    values = response_values(self.model, mb)
                loss, stats = value_loss(values, mb, objective)
                loss.backward()
                stats["critic/grad_norm"] = clip_and_step(
                    self.model, self.optimizer, self.optim_cfg.grad_clip
                )
                for key, value in stats.items():
                    sums[key] += float(value)
                count += 1
        self.scheduler.step()
        return {key: value / count for key, value in sums.items()}

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "shuffle": self.shuffle.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.shuffle.set_state(state["shuffle"])
