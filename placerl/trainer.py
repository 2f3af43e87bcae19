"""The controller loop, the same for every stage: step → log → evaluate → checkpoint.

Resume is exact: model weights, optimizer/scheduler/generator states, data position and
algorithm state come back from the newest readable checkpoint, so a run stopped after step k
and resumed to step n ends bitwise equal (on CPU) to an uninterrupted run to n. Before anything
is written, a resume checks that the config still trains the same thing (``resume.open_run``);
``config.yaml`` is written only once the stage is built and restored. A step whose update was
skipped for a non-finite loss or gradient is counted (``train/skipped_nonfinite``); too many
in a row stop the run (``numerics.py``).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import torch

from placerl import atomic_dirs
from placerl.checkpoint import export_model, prune_checkpoints
from placerl.config import dump_config
from placerl.config.compare import CONFIG_FILE
from placerl.config.schema import RunConfig
from placerl.logging import MetricsLogger, drop_steps_after
from placerl.numerics import BadStepCounter, pop_skipped, skipped_in_step
from placerl.placement.auto.plan import runs_in_process
from placerl.placement.auto.replan import Replan, monitor_for
from placerl.resume import USER_ALLOWED, open_run, restore_newest, save_stage
from placerl.stages import Stage, build_stage
from placerl.startup import startup_summary
from placerl.threads import configure_threads
from placerl.timing import PhaseTimer
from placerl.trackers import check_trackers

REPLANNED = "the re-plan's settings"  # a config change the run made itself


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
    (the CLI's ``placerl.profiling.profile_here``): strategy auto measures the machine first
    where no stored profile is usable; without it the defaults stand in."""
    allowed = USER_ALLOWED if allow_config_change else None
    return _train(cfg, resume, console, allowed, profiler)


def _train(cfg: RunConfig, resume: bool, console, allowed: str | None, profiler=None) -> dict:
    say = _sayer(console)
    cfg, found = open_run(cfg, resume, allowed, say, profiler)
    check_trackers(cfg.trainer.report_to)  # before any model loads
    seed_everything(cfg.seed)
    threads = configure_threads(cfg.placement, runs_in_process(cfg))  # before models load
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    stage = build_stage(cfg)
    try:
        return _run_stage(stage, cfg, found, console, say, threads)
    except Replan as replan:  # strategy auto: the planner pinned a new Plan; continue on it
        restart = replan
    finally:
        stage.close()  # stop the stage's worker processes (Ray runtime), after a failure too
    # the new Plan's settings are a config change by design: its checkpoint resumes under them
    return _train(restart.config, True, console, REPLANNED, profiler)


def _run_stage(stage: Stage, cfg: RunConfig, found: list, console, say, threads: str) -> dict:
    """Restore if asked, then step → log → evaluate → checkpoint to the last step."""
    run_dir, total, tc = Path(cfg.run_dir), cfg.trainer.steps, cfg.trainer
    start, last = 0, None
    if found:
        start, last = restore_newest(stage, found, cfg.stage, say)
        prune_checkpoints(run_dir / "checkpoints", tc.keep_checkpoints)  # a kill mid-prune
    atomic_dirs.write_text(run_dir / CONFIG_FILE, dump_config(cfg))
    if start == 0:  # a fresh start logs step 0 again: drop what an earlier attempt logged
        drop_steps_after(run_dir, -1)
    timer, bad_steps = PhaseTimer(), BadStepCounter(tc.max_bad_steps)
    pop_skipped()  # count only this run's updates
    final_eval: dict[str, float] = {}
    monitor = monitor_for(cfg)  # strategy auto: predicted vs measured step, re-plan advice
    options = dict(enable_progress=tc.progress, report_to=tc.report_to, console=console)
    with MetricsLogger(
        run_dir,
        total,
        start_step=start,
        description=stage.name,
        run_config=cfg.model_dump(mode="json"),
        wandb_project=tc.wandb_project,
        **options,
    ) as log:
        for line in startup_summary(cfg, stage, start, last, threads):  # said once
            log.print(line, plain=True)
        if start == 0 and (initial := stage.evaluate()):
            log.log(0, initial)
            log.evaluation(0, initial)
        if start >= total:
            log.print(f"{stage.name}: already at step {start} of {total}")
        for step in range(start + 1, total + 1):
            metrics = stage.step(step - 1, timer)
            skipped = metrics["train/skipped_nonfinite"] = skipped_in_step(metrics)
            if _due(step, tc.eval_every, total):
                with timer.phase("eval"):
                    final_eval = stage.evaluate()
                log.evaluation(step, final_eval)
                metrics |= final_eval
            metrics |= timer.pop()
            if (tokens := metrics.get("throughput/tokens")) is not None:
                metrics["throughput/tokens_per_s"] = tokens / metrics["time/step"]
            replan = monitor is not None and monitor.advise(step, metrics, log.print)
            log.log(step, metrics)
            log.log_spans(timer.pop_spans(), step)
            bad_steps.update(step, skipped, last.name if last else None)
            if _due(step, tc.save_every, total) or replan:
                last = save_stage(stage, cfg, step)
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
