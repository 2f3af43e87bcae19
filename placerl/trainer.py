"""The controller loop, the same for every stage: step → log → evaluate → checkpoint.

Resume is exact: model weights, optimizer/scheduler/generator states, data position and
algorithm state come back from the latest checkpoint, so a run stopped after step k and
resumed to step n ends bitwise equal (on CPU) to an uninterrupted run to n.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch

from placerl.checkpoint import (
    export_model,
    latest_checkpoint,
    load_state,
    load_weights,
    restore_rng,
    save_checkpoint,
)
from placerl.config import dump_config
from placerl.config.schema import RunConfig
from placerl.errors import UserError
from placerl.logging import MetricsLogger
from placerl.placement.auto_plan import Replan, monitor_for
from placerl.stages import build_stage
from placerl.timing import PhaseTimer


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _due(step: int, every: int, total: int) -> bool:
    return step == total or (every > 0 and step % every == 0)


def train(cfg: RunConfig, resume: bool = False, console=None) -> dict[str, float]:
    """Run one stage to ``trainer.steps``; returns the final evaluation metrics."""
    run_dir = Path(cfg.run_dir)
    ckpt_root = run_dir / "checkpoints"
    latest = latest_checkpoint(ckpt_root)
    if latest is not None and not resume:
        raise UserError(
            f"run directory already holds checkpoints (latest {latest.name}); add --resume to "
            "continue it, or choose another run_dir",
            where=str(run_dir),
        )
    seed_everything(cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    stage = build_stage(cfg)
    try:
        return _run_stage(stage, cfg, resume, latest, console)
    except Replan as replan:  # strategy auto: the planner re-planned; continue on its Plan
        restart = replan
    finally:
        close = getattr(stage, "close", None)
        if close is not None:
            close()  # stop the stage's worker processes (Ray runtime), after a failure too
    return train(restart.config, resume=True, console=console)


def _run_stage(stage, cfg: RunConfig, resume: bool, latest: Path | None, console) -> dict:
    """Restore if asked, then step → log → evaluate → checkpoint to the last step."""
    run_dir = Path(cfg.run_dir)
    ckpt_root = run_dir / "checkpoints"
    start = 0
    if resume and latest is not None:
        start = _restore(stage, latest)
    (run_dir / "config.yaml").write_text(dump_config(cfg))

    total, tc = cfg.trainer.steps, cfg.trainer
    timer = PhaseTimer()
    final_eval: dict[str, float] = {}
    monitor = monitor_for(cfg)  # strategy auto: predicted vs measured step, re-plan advice
    with MetricsLogger(
        run_dir,
        total,
        start_step=start,
        enable_progress=tc.progress,
        tensorboard=tc.tensorboard,
        description=stage.name,
        console=console,
    ) as log:
        if start == 0:
            initial = stage.evaluate()
            if initial:
                log.log(0, initial)
        if start >= total:
            log.print(f"{stage.name}: already at step {start} of {total}")
        for step in range(start + 1, total + 1):
            metrics = stage.step(step - 1, timer)
            if _due(step, tc.eval_every, total):
                with timer.phase("eval"):
                    final_eval = stage.evaluate()
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
            replan = monitor is not None and monitor.pending is not None
            if _due(step, tc.save_every, total) or replan:
                save_checkpoint(
                    ckpt_root,
                    step,
                    stage.trained_models(),
                    stage.tokenizer,
                    {"stage": stage.state_dict()},
                    keep=tc.keep_checkpoints,
                )
            if replan and step < total:
                error = monitor.replan_now(cfg, step)
                log.print(error.message)
                raise error
    for name, model in stage.trained_models().items():
        export_model(model, stage.tokenizer, run_dir / name)
    return final_eval


def _restore(stage, checkpoint: Path) -> int:
    state = load_state(checkpoint)
    for name, model in stage.trained_models().items():
        load_weights(model, checkpoint / name)
    stage.load_state_dict(state["stage"])
    restore_rng(state["rng"])
    return int(state["step"])


def timed_train(
    cfg: RunConfig, resume: bool = False, console=None
) -> tuple[dict[str, float], float]:
    start = time.perf_counter()
    metrics = train(cfg, resume, console)
    return metrics, time.perf_counter() - start
