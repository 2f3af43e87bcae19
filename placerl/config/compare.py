"""Is a resume continuing the same training? Compare the saved ``config.yaml`` with the new one.

A resume is exact only if everything that shapes the training is unchanged; a silently
different ``optim.lr`` or reward would give a run that is neither the old one nor a new one.
Keys that only say how long to run, how often to evaluate/save, or how to report may change.
The saved file is read with ``yaml.safe_load`` (data only) and validated by the schema, so
fields added to placerl since the run started compare by their defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from placerl.errors import UserError

CONFIG_FILE = "config.yaml"

# Keys that change neither the trajectory nor the state a checkpoint holds.
RESUME_SAFE = {
    "run_dir",
    "trainer.steps",
    "trainer.eval_every",
    "trainer.save_every",
    "trainer.keep_checkpoints",
    "trainer.progress",
    "trainer.tensorboard",
    "trainer.max_bad_steps",
    "trainer.report_to",
    "trainer.wandb_project",
    "trainer.log_samples",
}
RESUME_SAFE_PREFIXES = ("logging.", "report.", "wandb.", "trainer.wandb", "trainer.log")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (an empty dict stays a leaf)."""
    if not isinstance(data, dict) or not data:
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def training_changes(saved: dict, new: dict) -> list[str]:
    """``key: old → new`` for every differing key that is not resume-safe."""
    old_flat, new_flat = flatten(saved), flatten(new)
    changes = []
    for key in sorted(old_flat.keys() | new_flat.keys()):
        if key in RESUME_SAFE or key.startswith(RESUME_SAFE_PREFIXES):
            continue
        old, now = old_flat.get(key, "<absent>"), new_flat.get(key, "<absent>")
        if old != now:
            changes.append(f"{key}: {old!r} → {now!r}")
    return changes


def check_resume_config(
    run_dir: Path, cfg: BaseModel, allow_change: bool, allowed_by: str = "--allow-config-change"
) -> list[str]:
    """Refuse (``UserError``) a resume whose config changes the training, unless
    ``allow_change`` (``allowed_by`` says who allowed it); returns notices to print (the
    accepted changes, or why nothing was compared)."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return [f"{path} is missing: the resumed config cannot be compared with the original"]
    new = cfg.model_dump(mode="json")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("not a mapping")
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
        if allow_change:
            return [f"{path} cannot be read ({err}); resuming with the new config as allowed"]
        raise UserError(
            f"the run's saved config cannot be read ({err}); add --allow-config-change to "
            "resume with the new config anyway",
            where=str(path),
        ) from err
    try:
        saved = type(cfg).model_validate(raw).model_dump(mode="json")
    except ValidationError:
        saved = raw  # written by another placerl version: compare what is there
    changes = training_changes(saved, new)
    if not changes:
        return []
    if allow_change:
        return [f"resuming with a changed config ({allowed_by}): " + "; ".join(changes)]
    raise UserError(
        "the config differs from the one this run was started with in keys that change the "
        f"training: {'; '.join(changes)}. Resume with the saved values, use another run_dir, "
        "or add --allow-config-change to continue with the new ones",
        where=str(path),
    )
