"""The actor: the policy being trained. Log-probs of responses and the policy update.

One ``update`` call is one RL step: ``epochs`` passes over the batch, each split into
``minibatches`` optimizer steps; the learning-rate schedule advances once per call, so a
schedule's length is the run's number of steps whatever the minibatch settings.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from placerl.algos.objectives import PolicyObjective, policy_loss
from placerl.config.schema import OptimConfig
from placerl.roles.common import (
    autocast,
    clip_and_step,
    make_optimizer,
    minibatch_indices,
    response_log_probs,
)
from placerl.types import Batch


class ActorWorker:
    def __init__(
        self,
        model,
        optim: OptimConfig,
        total_steps: int,
        *,
        temperature: float = 1.0,
        precision: str = "fp32",
        seed: int = 0,
    ):
        self.model = model
        self.optim_cfg = optim
        self.temperature = temperature
        self.precision = precision
        self.optimizer, self.scheduler = make_optimizer(model.parameters(), optim, total_steps)
        self.shuffle = torch.Generator().manual_seed(seed + 17)

    @torch.no_grad()
    def log_probs(self, batch: Batch) -> torch.Tensor:
        """(B, R) log-probs of the responses under the current policy."""
        self.model.eval()
        with autocast(self.precision):
            log_probs, _ = response_log_probs(self.model, batch, self.temperature)
        return log_probs

    def update(
        self, batch: Batch, objective: PolicyObjective, epochs: int = 1, minibatches: int = 1
    ) -> dict[str, float]:
        """Minimise ``objective`` over the batch; returns mean stats over optimizer steps."""
        self.model.train()
        sums: dict[str, float] = defaultdict(float)
        count = 0
        for _ in range(epochs):
            for idx in minibatch_indices(batch.batch_size[0], minibatches, self.shuffle):
                mb = batch[idx]
                with autocast(self.precision):
                    log_probs, entropy = response_log_probs(
                        self.model, mb, self.temperature, with_entropy=True
                    )
                loss, stats = policy_loss(log_probs, entropy, mb, objective)
                loss.backward()
                stats["actor/grad_norm"] = clip_and_step(
                    self.model, self.optimizer, self.optim_cfg.grad_clip
                )
                for key, value in stats.items():
                    sums[key] += float(value)
                count += 1
        sums["actor/lr"] = self.scheduler.get_last_lr()[0] * count
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
