"""A placerl run in a child process, started as a user starts it, and the metrics rows it wrote:
how the kill-and-resume tests start, kill (through an environment variable the run's own test
hook reads) and read their runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KILL_HOOKS = ("PLACERL_KILL_AT_CALL", "PLACERL_KILL_AFTER_RESETS")


def child_env(**extra: str) -> dict[str, str]:
    """One thread (bitwise-reproducible CPU runs), no bytecode writes, the repository importable,
    no kill hook inherited; then ``extra``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    for hook in KILL_HOOKS:
        env.pop(hook, None)
    return env | extra


def train_command(stage: str, run_dir: Path, args: list[str]) -> list[str]:
    """``placerl train STAGE.yaml ARGS`` with a one-line config beside ``run_dir``."""
    config = run_dir.parent / f"{stage}.yaml"
    config.write_text(f"stage: {stage}\n")
    return [sys.executable, "-m", "placerl.cli", "train", str(config), *args]


def train(stage: str, run_dir: Path, args: list[str], **env: str) -> subprocess.CompletedProcess:
    """Run ``train_command`` to its end (5 minutes at most)."""
    cmd = train_command(stage, run_dir, args)
    return subprocess.run(cmd, env=child_env(**env), capture_output=True, text=True, timeout=300)


def metric_rows(run_dir: Path) -> list[dict]:
    """The run's metrics.jsonl rows of training steps (step > 0)."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if row["step"] > 0]
