"""The reference: the frozen initial policy whose log-probs anchor the KL term.

With LoRA the reference is usually the actor's own model with its adapter disabled
(``models.lora.FrozenBase``): no second copy of the base weights. Its log-probs are then
computed on the actor's module inside ``adapter_disabled``, so whatever forward path the
actor uses serves the reference too.
"""

from __future__ import annotations

import contextlib

import torch

from placerl.models.lora import FrozenBase, adapter_disabled
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

    @property
    def shares_actor(self) -> bool:
        """Whether this reference is the actor's LoRA model with its adapter disabled."""
        return isinstance(self.model, FrozenBase)

    @torch.no_grad()
    def log_probs(self, batch: Batch, temperature: float | None = None) -> torch.Tensor:
        """(B, R) log π_ref of the responses, at ``temperature`` (None: the sampling one)."""
        temperature = self.temperature if temperature is None else temperature
        model, base = self.model, contextlib.nullcontext()
        if isinstance(model, FrozenBase):
            model = model.lora_model
            base = adapter_disabled(model)
        with base, autocast(self.precision):
            log_probs, _ = response_log_probs(
                model, batch, temperature, share_prefix=self.share_prefix
            )
        return log_probs
