"""Where a run starts: a fresh run directory, or the newest checkpoint that can be read.

``open_run`` checks the run directory before anything loads: leftovers of a killed write are
cleaned, a directory with checkpoints needs ``--resume``, and a resume must train the same
thing (``config/compare.py``) unless a change is allowed (the user's ``--allow-config-change``,
or a re-plan's new settings, said as such).

A kill can leave the newest checkpoint damaged in ways no rename protects against (a disk
that filled up, a file truncated by hand or by a copy). Every file of a checkpoint is read
and checked before anything is applied to the stage, so a damaged one is skipped with its
reason printed, and the next older one is tried. Only when none can be read does the resume
stop, listing each checkpoint's reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from placerl import atomic_dirs
from placerl.checkpoint import (
    CheckpointUnreadable,
    apply_weights,
    list_checkpoints,
    read_checkpoint,
    read_weights,
    restore_rng,
    save_checkpoint,
)
from placerl.config.compare import check_resume_config
from placerl.config.preflight import check_run
from placerl.errors import UserError
from placerl.placement.auto.plan import prepare_auto

USER_ALLOWED = "--allow-config-change"


def open_run(cfg, resume: bool, allowed: str | None, say: Callable[[str], None], profiler=None):
    """The config to run (strategy auto: its pick's settings applied) and the checkpoints to
    resume from. ``allowed``: who allows a config change (``USER_ALLOWED``, a re-plan), or
    None; a resume that changes the training is refused otherwise. ``profiler``: strategy
    auto's, to measure the machine first where no stored profile is usable."""
    run_dir = Path(cfg.run_dir)
    check_run(cfg, resume)  # run_dir, the stage a resumed run recorded, the reward function
    ckpt_root = run_dir / "checkpoints"
    for note in atomic_dirs.clean_leftovers(run_dir) + atomic_dirs.clean_leftovers(ckpt_root):
        say(note)
    found = list_checkpoints(ckpt_root)
    if found and not resume:
        raise UserError(
            f"run directory already holds checkpoints (latest {found[-1][1].name}); add "
            "--resume to continue it, or choose another run_dir",
            where=str(run_dir),
        )
    # strategy auto: the pick's (or, resuming, the pinned) micro-batch/checkpointing/offload
    cfg = prepare_auto(cfg, bool(resume and found), say, profiler)
    if resume and found:
        for note in check_resume_config(run_dir, cfg, allowed is not None, allowed or ""):
            say(note)
    elif resume and run_dir.is_dir() and any(run_dir.iterdir()):
        # a run that left files but no checkpoint (killed before its first save); a new
        # run_dir (the demo resumes every stage) has nothing to say
        say(f"no checkpoint in {ckpt_root} to resume from; starting fresh")
    return cfg, found if resume else []


def restore_newest(
    stage, found: list[tuple[int, Path]], stage_name: str, say: Callable[[str], None]
) -> tuple[int, Path]:
    """Load the newest readable checkpoint of ``found`` into ``stage``; returns its step and
    path. ``UserError`` when none can be read or the checkpoint belongs to another stage."""
    reasons = []
    for _, path in reversed(found):
        try:
            state, _ = read_checkpoint(path, ())
            _check_stage(state, stage_name, path)
            weights = {name: read_weights(path / name) for name in stage.trained_models()}
        except CheckpointUnreadable as err:
            say(f"skipping checkpoint {path.name}: {err}")
            reasons.append(f"{path.name}: {err}")
            continue
        for name, model in stage.trained_models().items():
            apply_weights(model, weights[name], path / name)
        try:
            stage.load_state_dict(state["stage"])
        except KeyError as err:
            raise UserError(
                f"the checkpoint's trainer state does not fit stage {stage_name!r} (no {err})",
                where=str(path),
            ) from err
        restore_rng(state["rng"])
        if path != found[-1][1]:
            say(f"resuming from {path.name}, the newest checkpoint that could be read")
            _set_aside([p for s, p in found if s > int(state["step"])], say)
        return int(state["step"]), path
    raise UserError(
        "no checkpoint can be resumed from: " + "; ".join(reasons), where=str(found[-1][1].parent)
    )


def save_stage(stage, cfg, step: int) -> Path:
    """Checkpoint ``stage`` at ``step`` the way ``restore_newest`` reads it back: its trained
    models, tokenizer and state (with the stage's name, checked on resume); returns its path."""
    state = {"stage": stage.state_dict(), "stage_name": cfg.stage}
    ckpts, keep = Path(cfg.run_dir) / "checkpoints", cfg.trainer.keep_checkpoints
    return save_checkpoint(ckpts, step, stage.trained_models(), stage.tokenizer, state, keep=keep)


def _set_aside(damaged: list[Path], say: Callable[[str], None]) -> None:
    """Move unreadable checkpoints newer than the resumed one out of the ``step_*`` names
    (kept for inspection as ``damaged-step_N``), so that the resumed run's pruning never
    counts them in place of good ones and rewrites them cleanly."""
    for path in damaged:
        target = path.with_name(f"damaged-{path.name}")
        if target.exists():
            target = path.with_name(f"damaged-{path.name}-{os.getpid()}")
        path.rename(target)
        say(f"moved the unreadable {path.name} aside to {target}")


def _check_stage(state: dict, stage_name: str, path: Path) -> None:
    saved = state.get("stage_name")
    if saved is not None and saved != stage_name:
        raise UserError(
            f"this checkpoint was written by stage {saved!r}, the config trains {stage_name!r}; "
            "use another run_dir",
            where=str(path),
        )
