"""Keys users bring from other libraries (TRL's trainer configs, transformers'
``TrainingArguments``, peft), and where placerl keeps the same setting.

The loader asks ``unknown_key_hint`` for a key the schema does not have; the hint says which
placerl key is meant (by the stage, when the setting differs per stage), or that the same name
exists in another section (``batch_size`` → ``trainer.batch_size``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_KL = {
    "grpo": "grpo.kl_coef",
    "rloo": "grpo.kl_coef",
    "ppo": "ppo.kl_coef",
    "dpo": "preference.beta",
    "online_dpo": "preference.beta",
    "rso": "preference.beta (the DPO/SLiC loss; rso.beta is the sampling temperature)",
    "brain": "brain.beta",
}
# TRL / transformers / peft name → placerl key (a str), or per stage (a dict, "*" for any)
OTHER_NAMES: dict[str, str | dict[str, str]] = {
    "learning_rate": "optim.lr",
    "lr": "optim.lr",
    "weight_decay": "optim.weight_decay",
    "adam_beta1": "optim.betas (a pair: [beta1, beta2])",
    "adam_beta2": "optim.betas (a pair: [beta1, beta2])",
    "warmup_steps": "optim.warmup_steps",
    "warmup_ratio": "optim.warmup_steps (a count of steps)",
    "lr_scheduler_type": "optim.schedule",
    "max_grad_norm": "optim.grad_clip",
    "num_generations": "rollout.samples_per_prompt",
    "max_completion_length": "rollout.max_new_tokens",
    "response_length": "rollout.max_new_tokens",
    "max_new_tokens": "rollout.max_new_tokens",
    "temperature": "rollout.temperature",
    "top_p": "rollout.top_p",
    "top_k": "rollout.top_k",
    "use_vllm": "rollout.engine (rollout.engine: vllm)",
    "max_prompt_length": "data.max_prompt_len",
    "max_length": "data.max_len",
    "max_seq_length": "data.max_len",
    "dataset_name": "data.train (a local .jsonl/.json/.parquet/.csv file)",
    "train_dataset": "data.train (a local .jsonl/.json/.parquet/.csv file)",
    "eval_dataset": "data.eval",
    "beta": _KL,
    "kl_coef": _KL,
    "init_kl_coef": "ppo.kl_coef",
    "epsilon": {"ppo": "ppo.clip", "*": "grpo.clip"},
    "cliprange": "ppo.clip",
    "epsilon_high": {"ppo": "ppo.clip_high", "*": "grpo.clip_high"},
    "cliprange_value": "ppo.value_clip",
    "vf_coef": "ppo.vf_coef",
    "gamma": "ppo.gamma",
    "lam": "ppo.lam",
    "num_ppo_epochs": "ppo.epochs",
    "num_iterations": {"ppo": "ppo.epochs", "*": "grpo.epochs"},
    "num_mini_batches": {"ppo": "ppo.minibatches", "*": "grpo.minibatches"},
    "scale_rewards": "grpo.scale_by_std",
    "loss_type": {
        "dpo": "preference.loss",
        "online_dpo": "preference.loss",
        "rso": "preference.loss",
        "*": "grpo.loss_agg (GRPO/RLOO) or preference.loss (DPO)",
    },
    "label_smoothing": "preference.label_smoothing",
    "reward_funcs": "reward.function (module:function)",
    "reward_model_path": "reward.model",
    "ref_model": "reference",
    "ref_model_path": "reference",
    "model_name_or_path": "model.path",
    "output_dir": "run_dir",
    "max_steps": "trainer.steps",
    "num_train_epochs": "trainer.steps (placerl counts steps of one batch, not epochs)",
    "per_device_train_batch_size": "trainer.batch_size (and trainer.micro_batch_size per pass)",
    "gradient_accumulation_steps": "trainer.micro_batch_size (batches are split into passes "
    "of this many sequences; trainer.batch_size stays the batch of one step)",
    "save_steps": "trainer.save_every",
    "eval_steps": "trainer.eval_every",
    "save_total_limit": "trainer.keep_checkpoints",
    "logging_steps": "nothing: every step is logged to metrics.jsonl",
    "bf16": "model.precision (model.precision: bf16)",
    "torch_dtype": "model.precision (fp32 or bf16)",
    "dtype": "model.precision (fp32 or bf16)",
    "use_peft": "model.lora (e.g. model.lora.r=16)",
    "lora_r": "model.lora.r",
    "lora_alpha": "model.lora.alpha",
    "lora_dropout": "model.lora.dropout",
    "lora_target_modules": "model.lora.target_modules",
    "target_modules": "model.lora.target_modules",
}


def unknown_key_hint(dotted: str, data: Mapping[str, Any]) -> str | None:
    """ "'learning_rate' is a TRL/transformers name; placerl's is optim.lr" for an unknown key
    ``dotted`` whose last part is such a name, else None. ``data``: the raw config, whose
    ``stage`` picks the key of a setting that differs per stage (``beta``)."""
    leaf = dotted.rsplit(".", 1)[-1]
    target = OTHER_NAMES.get(leaf)
    if target is None:
        return None
    if isinstance(target, dict):
        stage = data.get("stage") if isinstance(data, Mapping) else None
        target = target.get(stage) or target.get("*") or _per_stage(target)
    return f"'{leaf}' is a TRL/transformers name; placerl's is {target}"


def same_name_elsewhere(dotted: str, keys: list[str]) -> str | None:
    """ "did you mean 'trainer.batch_size'?" for a key written in the wrong section: the
    schema's dotted ``keys`` whose last part is the unknown key's."""
    leaf = dotted.rsplit(".", 1)[-1]
    found = [k for k in keys if k.rsplit(".", 1)[-1] == leaf and k != dotted and "<" not in k]
    if not found:
        return None
    return "did you mean " + " or ".join(f"'{k}'" for k in found[:3]) + "?"


def _per_stage(by_stage: dict[str, str]) -> str:
    keys: dict[str, list[str]] = {}
    for stage, key in by_stage.items():
        keys.setdefault(key, []).append(stage)
    return "; ".join(f"{key} ({', '.join(stages)})" for key, stages in keys.items())
