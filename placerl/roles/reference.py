"""The reference: the frozen initial policy whose log-probs anchor the KL term."""

from __future__ import annotations

import torch

from placerl.roles.common import autocast, response_log_probs
from placerl.types import Batch


class ReferenceWorker:
    def __init__(
        self,
        model,
        *,
        temperature: float = 1.0,
        precision: str = "fp32",
        share_prefix: bool = True,
    ):
        self.model = model.eval().requires_grad_(False)
        self.temperature = temperature
        self.precision = precision
        self.share_prefix = share_prefix  # off under FSDP (see ActorWorker)

    @torch.no_grad()
    def log_probs(self, batch: Batch) -> torch.Tensor:
        with autocast(self.precision):
            log_probs, _ = response_log_probs(
                self.model, batch, self.temperature, share_prefix=self.share_prefix
            )
        return log_probs
