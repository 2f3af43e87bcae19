"""Where a run computes: ``placement.device`` resolved to a torch device, and values moved there.

One knob for every stage and runtime (``placement.device``): ``cpu``; ``gpu`` (CUDA, an error
when torch sees none, never a silent CPU run); ``auto`` (CUDA when torch sees it, else CPU).
Roles and stages put their models on the resolved device and move each batch to the device of
the model that reads it (``on_model_device``); what they hand back to the controller goes to
the CPU, the boundary the Ray workers draw too (runtime/ray/host.py), so the algorithms see
the same CPU batches whichever device computed them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from tensordict import TensorDict

from placerl.errors import UserError

CPU = torch.device("cpu")


def resolve_device(choice: str = "auto") -> torch.device:
    """``placement.device`` as a torch device: cuda (the current CUDA device) or cpu."""
    if choice == "cpu":
        return CPU
    if choice not in ("auto", "gpu"):
        raise UserError(
            f"unknown device {choice!r}: expected auto, cpu or gpu", where="placement.device"
        )
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if choice == "gpu":
        raise UserError(
            "placement.device is gpu but torch sees no CUDA device (torch "
            f"{torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); use "
            "placement.device=cpu or auto, or install a CUDA build of torch",
            where="placement.device",
        )
    return CPU


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (CPU for a model without parameters)."""
    for param in model.parameters():
        return param.device
    return CPU


def to_device(value: Any, device: torch.device | str) -> Any:
    """Tensors and TensorDicts to ``device``, inside dicts, lists, tuples and dataclasses
    (e.g. a packed DPO batch); anything else as it is. A no-op on the same device."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, TensorDict):
        return value if value.device == torch.device(device) else value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if type(value) in (list, tuple):  # not NamedTuples
        return type(value)(to_device(v, device) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.init}
        moved = {k: to_device(v, device) for k, v in fields.items()}
        if all(moved[k] is fields[k] for k in fields):
            return value
        return dataclasses.replace(value, **moved)
    return value


def on_model_device(value: Any, model: torch.nn.Module) -> Any:
    """``value`` (a batch) moved to where ``model`` computes."""
    return to_device(value, model_device(model))
