"""The controller loop, the same for every stage: step → log → evaluate → checkpoint.

Resume is exact: model weights, optimizer/scheduler/generator states, data position and
algorithm state come back from the newest readable checkpoint, so a run stopped after step k
and resumed to step n ends bitwise equal (on CPU) to an uninterrupted run to n. Before anything
is written, a resume checks that the config still trains the same thing
(``config/compare.py``); ``config.yaml`` is written only once the stage is built and restored.
A step whose update was skipped for a non-finite loss or gradient is counted
(``train/skipped_nonfinite``); too many in a row stop the run (``numerics.py``).
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from placerl import atomic_dirs
from placerl.checkpoint import (
    export_model,
    list_checkpoints,
    prune_checkpoints,
    save_checkpoint,
)
from placerl.config import dump_config
from placerl.config.compare import CONFIG_FILE, check_resume_config
from placerl.config.preflight import check_run
from placerl.config.schema import RunConfig
from placerl.errors import UserError
from placerl.logging import (
    METRICS_FILE,
    SAMPLES_FILE,
    TIMELINE_FILE,
    MetricsLogger,
    _rewrite_jsonl,
)
from placerl.numerics import BadStepCounter, pop_skipped, skipped_in_step
from placerl.placement.auto.plan import prepare_auto
from placerl.placement.auto.replan import Replan, monitor_for
from placerl.resume import restore_newest
from placerl.stages import build_stage
from placerl.timing import PhaseTimer
from placerl.trackers import check_trackers


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _due(step: int, every: int, total: int) -> bool:
    return step == total or (every > 0 and step % every == 0)


def train(
    cfg: RunConfig,
    resume: bool = False,
    console=None,
    allow_config_change: bool = False,
    profiler=None,
) -> dict[str, float]:
    """Run one stage to ``trainer.steps``; returns the final evaluation metrics. ``profiler``
    (the CLI's: ``placerl.profiling.profile_here``) lets ``strategy: auto`` measure the
    machine first where no stored profile is usable; without it the defaults stand in."""
    run_dir = Path(cfg.run_dir)
    check_run(cfg, resume)  # run_dir, the stage a resumed run recorded, the reward function
    ckpt_root = run_dir / "checkpoints"
    say = _sayer(console)
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
        for note in check_resume_config(run_dir, cfg, allow_config_change):
            say(note)
    elif resume and run_dir.is_dir() and any(run_dir.iterdir()):
        # a run that left files but no checkpoint (killed before its first save); a new
        # run_dir (the demo resumes every stage) has nothing to say
        say(f"no checkpoint in {ckpt_root} to resume from; starting fresh")
    check_trackers(cfg.trainer.report_to)  # before any model loads
    seed_everything(cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    stage = build_stage(cfg)
    try:
        return _run_stage(stage, cfg, found if resume else [], console, say)
    except Replan as replan:  # strategy auto: the planner pinned a new Plan; continue on it
        restart = replan
    finally:
        close = getattr(stage, "close", None)
        if close is not None:
            close()  # stop the stage's worker processes (Ray runtime), after a failure too
    # the new Plan's settings are a config change by design: its checkpoint resumes under them
    return train(restart.config, True, console, allow_config_change=True, profiler=profiler)


def _run_stage(stage, cfg: RunConfig, found: list, console, say) -> dict:
    """Restore if asked, then step → log → evaluate → checkpoint to the last step."""
    run_dir = Path(cfg.run_dir)
    ckpt_root = run_dir / "checkpoints"
    start, last = 0, None
    if found:
        start, last = restore_newest(stage, found, cfg.stage, say)
        prune_checkpoints(ckpt_root, cfg.trainer.keep_checkpoints)  # a kill mid-prune
    atomic_dirs.write_text(run_dir / CONFIG_FILE, dump_config(cfg))
    if start == 0:  # a fresh start logs step 0 again: drop what an earlier attempt logged
        for name in (METRICS_FILE, TIMELINE_FILE, SAMPLES_FILE):
            _rewrite_jsonl(run_dir / name, keep_step_at_most=-1)

    total, tc = cfg.trainer.steps, cfg.trainer
    timer = PhaseTimer()
    bad_steps = BadStepCounter(tc.max_bad_steps)
    pop_skipped()  # count only this run's updates
    final_eval: dict[str, float] = {}
    monitor = monitor_for(cfg)  # strategy auto: predicted vs measured step, re-plan advice
    with MetricsLogger(
        run_dir,
        total,
        start_step=start,
        enable_progress=tc.progress,
        report_to=tc.report_to,
        description=stage.name,
        console=console,
        run_config=cfg.model_dump(mode="json"),
        wandb_project=tc.wandb_project,
    ) as log:
        if start == 0:
            initial = stage.evaluate()
            if initial:
                log.log(0, initial)
                log.evaluation(0, initial)
        if start >= total:
            log.print(f"{stage.name}: already at step {start} of {total}")
        for step in range(start + 1, total + 1):
            metrics = stage.step(step - 1, timer)
            skipped = skipped_in_step(metrics)
            metrics["train/skipped_nonfinite"] = skipped
            if _due(step, tc.eval_every, total):
                with timer.phase("eval"):
                    final_eval = stage.evaluate()
                log.evaluation(step, final_eval)
                metrics |= final_eval
            metrics |= timer.pop()
            if monitor is not None:
                metrics |= monitor.observe(step, metrics)
                for message in monitor.messages:
                    log.print(message)
                monitor.messages.clear()
            if "throughput/tokens" in metrics:
                metrics["throughput/tokens_per_s"] = (
                    metrics["throughput/tokens"] / metrics["time/step"]
                )
            log.log(step, metrics)
            log.log_spans(timer.pop_spans(), step)
            bad_steps.update(step, skipped, last.name if last else None)
            replan = monitor is not None and monitor.pending is not None
            if _due(step, tc.save_every, total) or replan:
                last = save_checkpoint(
                    ckpt_root,
                    step,
                    stage.trained_models(),
                    stage.tokenizer,
                    {"stage": stage.state_dict(), "stage_name": cfg.stage},
                    keep=tc.keep_checkpoints,
                )
            if replan and step < total:
                error = monitor.replan_now(cfg, step)
                log.print(error.message)
                raise error
    for name, model in stage.trained_models().items():
        export_model(model, stage.tokenizer, run_dir / name, step=total)
    return final_eval


def _sayer(console):
    """Notices (fallbacks, clean-ups, a fresh start) go to the run's console or stderr."""
    if console is not None:
        return lambda message: console.print(f"placerl: {message}", markup=False, highlight=False)
    return lambda message: print(f"placerl: {message}", file=sys.stderr)


def timed_train(
    cfg: RunConfig, resume: bool = False, console=None, allow_config_change: bool = False
) -> tuple[dict[str, float], float]:
    start = time.perf_counter()
    metrics = train(cfg, resume, console, allow_config_change)
    return metrics, time.perf_counter() - start
