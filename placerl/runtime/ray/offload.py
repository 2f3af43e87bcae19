"""Offload (``Plan.offload``, GPU only): before a role runs on a worker, the other roles'
models (and optimizer states) on that slot go to host memory and the role's own come back.
On CPU there is nowhere to offload to, so it is a no-op; FSDP-sharded models are never moved.
"""

from __future__ import annotations

from typing import Any

import torch

from placerl.models.lora import FrozenBase
from placerl.roles.common import TrainedModel
from placerl.types import Role


def held_model(role: Any, sharded: bool) -> torch.nn.Module | None:
    """The model a role holds on its device, unless FSDP shards it (a LoRA reference is the
    actor's model with its adapter disabled; a rule reward holds none)."""
    model = role.model
    if isinstance(model, FrozenBase):
        model = model.lora_model
    return None if sharded or not isinstance(model, torch.nn.Module) else model


def bring_in(roles: dict[Role, Any], sharded: dict[Role, bool], role: Role, device) -> None:
    """Every other role's model (and optimizer state) to the host, ``role``'s to ``device``."""
    keep = held_model(roles[role], sharded[role])
    for other, target in roles.items():
        model = held_model(target, sharded[other])
        if model is not None and model is not keep:
            _move(model, target, torch.device("cpu"))
    if keep is not None:
        _move(keep, roles[role], device)
    torch.cuda.empty_cache()


def _move(model: torch.nn.Module, role: Any, device: torch.device) -> None:
    model.to(device)
    if isinstance(role, TrainedModel):
        for state in role.optimizer.state.values():
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and key != "step":
                    state[key] = value.to(device)
