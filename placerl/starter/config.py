"""The commented starter config of ``placerl init STAGE``, generated from the schema.

Every value is what ``load_config`` makes of the stage's starter settings (so the file is
valid by construction) and every comment is the field's own description (so it cannot drift
from ``--help-config``). Only the sections the stage reads are written; the rest keep their
defaults and are one ``placerl train --help-config SECTION`` away.
"""

from __future__ import annotations

import textwrap
from typing import Any

import yaml
from pydantic import BaseModel

from placerl.config import load_config
from placerl.config.schema import RunConfig

RL = ("ppo", "grpo", "rloo")
SAMPLED = ("online_dpo", "rso", "brain")
AFTER_SFT = "runs/sft/policy"
# stage → what the starter sets beyond the defaults (dotted key → value)
SETTINGS: dict[str, dict[str, Any]] = {
    "sft": {
        "data.train": "data/sft.jsonl",
        "data.eval": "data/eval_prompts.jsonl",
        "optim.lr": 1e-3,
        "optim.warmup_steps": 20,
        "optim.schedule": "cosine",
        "trainer.steps": 200,
        "trainer.eval_every": 50,
        "rollout.max_new_tokens": 8,
    },
    "rm": {"model.path": AFTER_SFT, "data.train": "data/preferences.jsonl", "optim.lr": 1e-4},
    "dpo": {
        "model.path": AFTER_SFT,
        "data.train": "data/preferences.jsonl",
        "data.eval": "data/eval_prompts.jsonl",
        "optim.lr": 1e-4,
        "rollout.max_new_tokens": 8,
    },
    "ppo": {"reward.model": "runs/rm/reward_model"},
    "grpo": {"reward.function": "rewards:digits_match", "rollout.samples_per_prompt": 4},
    "rloo": {"reward.function": "rewards:digits_match", "rollout.samples_per_prompt": 4},
    "online_dpo": {"reward.function": "rewards:digits_match", "rollout.samples_per_prompt": 4},
    "rso": {"reward.function": "rewards:digits_match"},
    "brain": {"reward.function": "rewards:digits_match"},
}
PROMPTED = {
    "model.path": AFTER_SFT,
    "data.train": "data/prompts.jsonl",
    "data.eval": "data/eval_prompts.jsonl",
    "rollout.max_new_tokens": 8,
    "trainer.batch_size": 16,
    "trainer.eval_every": 20,
}
for _stage in (*RL, *SAMPLED):
    SETTINGS[_stage] = PROMPTED | SETTINGS[_stage]

COMMON = ["stage", "run_dir", "seed", "model", "data", "optim", "trainer"]
SECTIONS: dict[str, list[str]] = {
    "sft": [*COMMON, "rollout"],
    "rm": COMMON,
    "dpo": [*COMMON, "preference", "rollout"],
    "ppo": [*COMMON, "reference", "critic", "rollout", "ppo", "reward", "placement"],
    "grpo": [*COMMON, "reference", "rollout", "grpo", "reward", "placement"],
    "rloo": [*COMMON, "reference", "rollout", "grpo", "reward", "placement"],
    "online_dpo": [*COMMON, "rollout", "reward", "preference", "online_dpo", "placement"],
    "rso": [*COMMON, "rollout", "reward", "preference", "rso", "placement"],
    "brain": [*COMMON, "rollout", "reward", "brain", "placement"],
}
# sections written in part: the rest of them rarely matters to a first run
ONLY = {"placement": ("strategy", "device", "max_staleness")}
SKIP = {"rollout": ("vllm",), "data": ("builtin_task", "builtin_size", "builtin_noise")}
NOTES = {
    "model.path": "Your model: a local Hugging Face directory (`hf download ORG/NAME "
    "--local-dir DIR`).",
    "model.lora": "e.g. lora: {r: 16, alpha: 32} trains adapters only (see --help-config "
    "model.lora).",
}


def settings(stage: str) -> RunConfig:
    overrides = [f"stage={stage}", f"run_dir=runs/{stage}"]
    overrides += [f"{k}={_flow(v)}" for k, v in SETTINGS[stage].items()]
    return load_config(None, overrides, RunConfig)


def render(stage: str) -> str:
    """The starter config of ``stage`` as YAML with a comment above every key."""
    cfg = settings(stage)
    values = cfg.model_dump(mode="json")
    lines = _header(stage)
    for name in SECTIONS[stage]:
        field = RunConfig.model_fields[name]
        section = getattr(cfg, name)
        lines.append("")
        if isinstance(section, BaseModel):
            lines += _comment(field.description or "", "")
            lines.append(f"{name}:")
            lines += _section(type(section), values[name], name, "  ")
        else:
            lines += _comment(field.description or "", "")
            lines.append(f"{name}: {_flow(values[name])}")
    return "\n".join(lines) + "\n"


def _section(model: type[BaseModel], values: dict, prefix: str, indent: str) -> list[str]:
    lines = []
    for key, field in model.model_fields.items():
        dotted = f"{prefix}.{key}"
        if key not in ONLY.get(prefix, (key,)) or key in SKIP.get(prefix, ()):
            continue
        lines += _comment(" ".join(filter(None, [field.description, NOTES.get(dotted)])), indent)
        lines.append(f"{indent}{key}: {_flow(values[key])}")
    return lines


def _header(stage: str) -> list[str]:
    before = {"rm": "sft", "ppo": "sft and rm"}.get(stage, "sft")
    first = (
        []
        if stage == "sft"
        else [f"# Starts from the policy of `placerl train {before}.yaml` (set by `placerl init`)."]
    )
    return [
        f"# placerl starter config, stage {stage} (written by `placerl init {stage}`).",
        f"# Run it from this directory:  placerl train {stage}.yaml [key=value ...]",
        *first,
        "# The files in data/ show the data format (chat messages); point data.train at yours.",
        "# Every key with its type and default: placerl train --help-config [SECTION]",
    ]


def _comment(text: str, indent: str) -> list[str]:
    if not text:
        return []
    prefix = f"{indent}# "
    return textwrap.wrap(
        text, 96, initial_indent=prefix, subsequent_indent=prefix, break_on_hyphens=False
    )


def _flow(value: Any) -> str:
    """A value as YAML flow text on one line (``null``, ``1.0e-05``, ``[a, b]``)."""
    return (
        yaml.safe_dump(value, default_flow_style=True, width=10**6)
        .strip()
        .removesuffix("\n...")
        .removesuffix(" ...")
    )
