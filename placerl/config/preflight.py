"""Checks of a validated config against the world, run before anything is written.

The schema checks what a config says; these check what it points at: the run directory (a
file where a directory should be; a run of another stage when resuming), the reward function
(importable, so a typo fails in a second instead of after the models load), and the model's
context length (prompts + ``rollout.max_new_tokens`` must fit in ``max_position_embeddings``).
Each failure is one ``UserError`` naming the key or file; none of them writes anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from placerl.errors import UserError

REWARDED_STAGES = ("ppo", "grpo", "rloo", "online_dpo", "rso", "brain")


def check_run(cfg, resume: bool) -> None:
    """Everything that can be checked before the stage is built; raises ``UserError``."""
    check_run_dir(Path(cfg.run_dir))
    if resume:
        check_recorded_stage(Path(cfg.run_dir), cfg.stage)
    if cfg.stage in REWARDED_STAGES and cfg.reward.function and not cfg.reward.model:
        from placerl.roles.reward import import_reward_function

        import_reward_function(cfg.reward.function)
    if cfg.stage in REWARDED_STAGES and cfg.env.enabled:
        check_environment(cfg)


def check_environment(cfg) -> None:
    """``env.factory`` or ``env.tools`` import, and the factory builds an environment: a typo
    or a factory that fails is reported before any model loads."""
    from placerl.rollout.envs import load_env_factory, load_tools, start_environment
    from placerl.rollout.envs.loading import import_callable

    if cfg.env.factory:
        factory = load_env_factory(cfg.env.factory)
        start_environment(factory, cfg.env.limits(), "env.factory")
    else:
        load_tools(cfg.env.tools)
    if cfg.env.parser != "hermes":
        import_callable(cfg.env.parser, "env.parser")


def check_run_dir(run_dir: Path) -> None:
    """``run_dir`` must be a directory, or creatable as one, and writable."""
    for path in (run_dir, *run_dir.parents):
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                what = "run_dir" if path == run_dir else f"{path} (a parent of run_dir)"
                raise UserError(
                    f"{what} is an existing file, not a directory; choose another run_dir",
                    where=str(run_dir),
                )
            if not os.access(path, os.W_OK | os.X_OK):
                raise UserError(f"no permission to write in {path}", where=str(run_dir))
            return


def recorded_stage(run_dir: Path) -> str | None:
    """The ``stage`` of the run in ``run_dir`` (its saved config.yaml), or None if unknown."""
    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    stage = saved.get("stage") if isinstance(saved, dict) else None
    return stage if isinstance(stage, str) else None


def check_recorded_stage(run_dir: Path, stage: str) -> None:
    """Resuming a run with a config of another stage would load the wrong trainer state."""
    recorded = recorded_stage(run_dir)
    if recorded is not None and recorded != stage:
        raise UserError(
            f"--resume: this run directory holds a '{recorded}' run (its config.yaml says "
            f"stage: {recorded}) but the config is stage '{stage}'; resume it with a "
            f"'{recorded}' config, or choose another run_dir for the '{stage}' run",
            where=str(run_dir),
        )


def context_limit(model_dir: str | Path) -> int | None:
    """The longest sequence the model at ``model_dir`` takes (from its config.json)."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None  # the model loader reports unreadable configs
    return positions(config) if isinstance(config, dict) else None


def positions(config: dict) -> int | None:
    """The longest sequence a model with this config (a config.json as a dict) takes."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_generation_fits(
    token_ids: list[list[int]],
    max_new_tokens: int,
    model_dir: str | Path,
    source: str,
    key: str = "rollout.max_new_tokens",
) -> None:
    """The longest prompt plus ``max_new_tokens`` sampled tokens must fit the model; ``key``
    names the budget (``env.max_tokens`` for episodes: every token after the prompt)."""
    limit = context_limit(model_dir)
    if limit is None or not token_ids:
        return
    row = max(range(len(token_ids)), key=lambda i: len(token_ids[i]))
    longest = len(token_ids[row])
    if longest + max_new_tokens > limit:
        raise UserError(
            f"{key}={max_new_tokens} plus the longest prompt ({longest} tokens, "
            f"{source} row {row}) is {longest + max_new_tokens} tokens, beyond the model's "
            f"max_position_embeddings={limit} ({Path(model_dir) / 'config.json'}); lower "
            f"{key} or shorten the prompts",
            where=key,
        )
