"""Building the rollout on an inference engine, and moving the trainer's weights into it.

An engine (vLLM) holds its own copy of the policy, so even the local runtime is a "rollout
copy" case: the experience pipeline syncs the trainer's weights into the engine every
``staleness.sync_every`` updates (and whenever a sample would exceed ``max_staleness``), in
place, through ``EngineSync``. With ``max_staleness: 0`` the engine gets the weights before
every sample, so training stays on-policy up to the engine/trainer numerical mismatch, which
the trainer's own π_old and truncated importance weights correct (``recompute_log_probs``
is forced to ``always``).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from placerl.config.schema import RunConfig
from placerl.models.tokens import end_token_ids
from placerl.roles.rollout import EngineRolloutWorker
from placerl.rollout.vllm_engine import EngineOptions, VLLMEngine
from placerl.runtime.weight_sync import SyncStats, named_tensors


def uses_engine(cfg: RunConfig) -> bool:
    return cfg.rollout.engine != "placerl"


def engine_end_ids(model_dir: str | Path, tokenizer) -> tuple[int, ...]:
    """The run's end tokens (models/tokens.py) for an engine built from ``model_dir``: its
    generation_config.json is read without loading the model."""
    from types import SimpleNamespace

    from transformers import GenerationConfig

    try:
        config = GenerationConfig.from_pretrained(model_dir)
    except OSError:  # no generation_config.json
        config = None
    return end_token_ids(tokenizer, SimpleNamespace(generation_config=config))


def engine_options(cfg: RunConfig) -> EngineOptions:
    v = cfg.rollout.vllm
    return EngineOptions(
        dtype="bfloat16" if cfg.model.precision == "bf16" else "float32",
        max_model_len=v.max_model_len or cfg.data.max_prompt_len + cfg.rollout.max_new_tokens,
        seed=cfg.seed,
        gpu_memory_utilization=v.gpu_memory_utilization,
        cpu_kv_cache_gb=v.cpu_kv_cache_gb,
        enforce_eager=v.enforce_eager,
        enable_sleep_mode=v.sleep_when_training and torch.cuda.is_available(),
    )


def make_engine_rollout(cfg: RunConfig, model_dir: str | Path, tokenizer) -> EngineRolloutWorker:
    from placerl.runtime.local import sampling_params

    engine = VLLMEngine(
        model_dir,
        engine_options(cfg),
        end_token_ids=engine_end_ids(model_dir, tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        tokenizer=tokenizer,
    )
    return EngineRolloutWorker(engine, sampling_params(cfg), seed=cfg.seed)


class EngineSync:
    """The pipeline's ``WeightSyncer`` for an engine in this process: the trainer module's
    tensors go into the engine by name, in place (no copy on CPU; the engine casts).

    ``rollout_state`` (a checkpoint while the engine lags the trainer, only with
    ``sync_every`` > 1) needs the weights the engine holds; an engine cannot hand them back in
    the trainer's layout, so a CPU copy of what was last sent is kept — only then."""

    def __init__(self, trainer_model: torch.nn.Module, rollout: EngineRolloutWorker, keep=False):
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
    is not changed), so the engine serves the trained policy without LoRA support of its own.
    A gathered state dict (a sharded actor's ``weights()``) is taken as it is."""
    from placerl.models.lora import is_lora

    if not isinstance(weights, torch.nn.Module):
        return list(weights.items())
    if not is_lora(weights):
        return named_tensors(weights)
    return list(_merged(weights.get_base_model()))


def _merged(module: torch.nn.Module, prefix: str = "", seen: set | None = None):
    seen = set() if seen is None else seen
    base = getattr(module, "base_layer", None)
    if base is not None and hasattr(module, "get_delta_weight"):  # a peft LoRA layer
        weight = base.weight.detach()
        for adapter in module.active_adapters:
            if adapter in getattr(module, "lora_A", {}):
                weight = weight + module.get_delta_weight(adapter).to(weight.dtype)
        yield f"{prefix}weight", weight
        if getattr(base, "bias", None) is not None:
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


def engine_rollout_for_slot(cfg: RunConfig, path, tokenizer, device, *, colocated: bool):
    """A Ray slot's engine rollout. Colocated with the actor, it takes the actor's weights
    before the first generation after an update (``refresh_from_actor``, a copy in the
    process) and sleeps while the trainer works (GPU). On slots of its own (Separate) an HF
    copy, ``rollout.model``, receives the trainer's broadcast (LoRA: adapters only), then goes
    into the engine."""
    from placerl.models.loading import LoadOptions, load_policy
    from placerl.models.lora import with_lora

    rollout = make_engine_rollout(cfg, path, tokenizer)
    if not colocated:
        options = LoadOptions.of(cfg.model, frozen=True)
        rollout.model = with_lora(load_policy(path, options), cfg.model.lora).to(device)
    rollout.colocated = colocated
    return rollout


def refresh_from_actor(rollout: EngineRolloutWorker, actor, updates: int) -> bool:
    """Load the colocated actor's weights into the engine if it has made updates since the
    last load (a sharded actor's ``weights()`` gathers them); whether it loaded."""
    if rollout.engine_version == updates:
        return False
    sharded = getattr(getattr(actor, "dp", None), "sharded", False)
    weights = actor.weights() if sharded else getattr(actor, "module", actor.model)
    rollout.load_named_weights(engine_weights(weights))
    rollout.engine_version = updates
    return True
