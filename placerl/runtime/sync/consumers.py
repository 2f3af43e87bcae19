"""What receives the trainer's weights: a shadow module, an inference engine, an engine's HF copy.

- ``LocalShadow``: the rollout's own copy of the policy in this process (a lagging rollout or
  a frozen proposal of the local runtime); ``copy_`` in place, fingerprinted (guard.py).
- ``EngineSync``: an inference engine in this process; the trainer module's tensors go into it
  by name, in place (the engine casts). A LoRA model's adapters are merged layer by layer
  first (``engine_weights``), so the engine serves the trained policy without LoRA support.
- ``engine_weights``: Hugging Face checkpoint names and full tensors of a module (merged) or
  of a gathered state dict, as engines load them; Ray workers feed their engines with it.

For a LoRA model only the adapters (and trained heads) travel between copies of the same LoRA
model (``models.lora.sync_view``): the base is already the trainer's everywhere.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from placerl.models.lora import is_lora, sync_view
from placerl.runtime.sync.guard import check_arrival
from placerl.runtime.sync.transport import SyncStats, copy_weights, fingerprint, named_tensors


class LocalShadow:
    """The rollout's own copy of the policy in this process: the pipeline's ``RolloutSync``."""

    def __init__(self, trainer_model: nn.Module, shadow_model: nn.Module):
        self.trainer_model, self.shadow_model = trainer_model, shadow_model

    def sync(self) -> SyncStats:
        source = sync_view(self.trainer_model)
        stats = copy_weights(source, sync_view(self.shadow_model))
        if stats.fingerprint is not None:
            sent = fingerprint([t for _, t in named_tensors(source)])
            check_arrival(sent, {"the rollout copy": stats.fingerprint})
        return stats

    def rollout_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.shadow_model.state_dict().items()}

    def load_rollout_state(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow_model.load_state_dict(state)


class EngineSync:
    """The pipeline's ``RolloutSync`` for an engine in this process.

    ``rollout_state`` (a checkpoint while the engine lags the trainer, only with
    ``sync_every`` > 1) needs the weights the engine holds; an engine cannot hand them back in
    the trainer's layout, so a CPU copy of what was last sent is kept — only then."""

    def __init__(self, trainer_model: nn.Module, rollout, keep: bool = False):
        self.trainer_model, self.rollout, self.keep = trainer_model, rollout, keep
        self.sent: dict[str, torch.Tensor] | None = None

    def sync(self) -> SyncStats:
        start = time.perf_counter()
        named = engine_weights(self.trainer_model)  # LoRA: merged, in this process
        self.rollout.load_named_weights(named)
        if self.keep:
            self.sent = {k: v.detach().to("cpu", copy=True) for k, v in named}
        size = sum(t.numel() * t.element_size() for _, t in named)
        return SyncStats(len(named), size, 1, time.perf_counter() - start)

    def rollout_state(self) -> dict[str, torch.Tensor]:
        if self.sent is None:
            return {k: v.detach().clone() for k, v in engine_weights(self.trainer_model)}
        return self.sent

    def load_rollout_state(self, state: dict[str, torch.Tensor]) -> None:
        self.rollout.load_named_weights(list(state.items()))
        if self.keep:
            self.sent = dict(state)


def engine_weights(weights) -> list[tuple[str, torch.Tensor]]:
    """What an engine loads: Hugging Face checkpoint names and full tensors. A LoRA model's
    adapters are merged layer by layer (W + ΔW, one layer's extra memory at a time; the model
    is not changed). A gathered state dict (a sharded actor's ``weights()``) is taken as is."""
    if not isinstance(weights, nn.Module):
        return list(weights.items())
    if not is_lora(weights):
        return named_tensors(weights)
    return list(_merged(weights.get_base_model()))


def _merged(module: nn.Module, prefix: str = "", seen: set | None = None):
    from peft.tuners.lora import LoraLayer

    seen = set() if seen is None else seen
    if isinstance(module, LoraLayer):  # W + ΔW of its active adapters, under W's own names
        base = module.get_base_layer()
        weight = base.weight.detach()
        for adapter in module.active_adapters:
            if adapter in module.lora_A:
                weight = weight + module.get_delta_weight(adapter).to(weight.dtype)
        yield f"{prefix}weight", weight
        if base.bias is not None:
            yield f"{prefix}bias", base.bias.detach()
        return
    for name, tensor in [*module._parameters.items(), *module._buffers.items()]:
        persistent = name not in module._non_persistent_buffers_set
        if tensor is not None and persistent and id(tensor) not in seen:
            seen.add(id(tensor))
            yield f"{prefix}{name}", tensor.detach()
    for name, child in module._modules.items():
        if child is not None:
            yield from _merged(child, f"{prefix}{name}.", seen)
