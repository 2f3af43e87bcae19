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

import json
import time
from pathlib import Path

import torch

from placerl.config.schema import RunConfig
from placerl.roles.rollout import EngineRolloutWorker
from placerl.rollout.vllm_engine import EngineOptions, VLLMEngine
from placerl.runtime.weight_sync import SyncStats, named_tensors


def uses_engine(cfg: RunConfig) -> bool:
    return cfg.rollout.engine != "placerl"


def end_token_ids(model_dir: str | Path, tokenizer) -> list[int]:
    """Every token that ends a response: the model's generation_config.json ``eos_token_id``
    (an int or a list: Llama-3 has 3, Qwen2.5 2) plus the tokenizer's EOS."""
    ids: list[int] = []
    path = Path(model_dir) / "generation_config.json"
    if path.exists():
        value = json.loads(path.read_text()).get("eos_token_id")
        ids += value if isinstance(value, list) else [] if value is None else [value]
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return sorted({int(i) for i in ids})


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
        end_token_ids=end_token_ids(model_dir, tokenizer),
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
        named = named_tensors(self.trainer_model)
        self.rollout.load_named_weights(named)
        if self.keep:
            self.sent = {k: v.detach().to("cpu", copy=True) for k, v in named}
        size = sum(t.numel() * t.element_size() for _, t in named)
        return SyncStats(len(named), size, 1, time.perf_counter() - start)

    def rollout_state(self) -> dict[str, torch.Tensor]:
        if self.sent is None:
            return {k: v.detach().clone() for k, v in named_tensors(self.trainer_model)}
        return self.sent

    def load_rollout_state(self, state: dict[str, torch.Tensor]) -> None:
        self.rollout.load_named_weights(list(state.items()))
        if self.keep:
            self.sent = dict(state)
