"""Distributed SFT, RM and DPO survive their failures: kill -9 of the driver mid-run, then
``--resume``, ends bitwise equal to an uninterrupted run; a dead worker is named and the run exits 3 with
the command that resumes it (as for the RL stages, ``test_faults_on_cpu.py``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests import cli_runs
from tests.conftest import fast_overrides

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

FLATTEN = ["placement.strategy=flatten", "placement.num_workers=2"]
FLATTEN += ["placement.threads_per_worker=1", "placement.device=cpu"]
COMMON = ["data.num_eval=0", "trainer.batch_size=3", "trainer.micro_batch_size=2"]


TRAINED = {"sft": "policy", "rm": "reward_model", "dpo": "policy"}


def _start(model_dir, run_dir: Path, steps: int, *extra, stage: str = "sft") -> subprocess.Popen:
    args = [*fast_overrides(model_dir, run_dir, stage, steps), *COMMON, *FLATTEN, *extra]
    cmd = cli_runs.train_command(stage, run_dir, args)
    env = cli_runs.child_env()
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended first: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# rm trains like sft (one row an example, a value head): a sweep case
@pytest.mark.parametrize("stage", ["sft", pytest.param("rm", marks=pytest.mark.sweep), "dpo"])
def test_kill_of_the_driver_then_resume_is_exact(tiny_model_dir, tmp_path, stage):
    """DPO's cached reference sums are in the checkpoint: the resumed run computes what is
    missing exactly as the uninterrupted one did."""
    steps = 8
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    code, err = _finish(_start(tiny_model_dir, straight, steps, stage=stage))
    assert code == 0, err[-3000:]

    proc = _start(tiny_model_dir, killed, steps, stage=stage)
    _wait_for(lambda: (killed / "checkpoints" / "step_000003").is_dir(), proc)
    proc.send_signal(signal.SIGKILL)
    code, _ = _finish(proc)
    assert code == -9
    done = sorted(p.name for p in (killed / "checkpoints").iterdir() if p.name.startswith("step"))
    assert f"step_{steps:06d}" not in done, "scenario: killed mid-run"

    code, err = _finish(_start(tiny_model_dir, killed, steps, "--resume", stage=stage))
    assert code == 0, err[-3000:]
    a = load_file(straight / TRAINED[stage] / "model.safetensors")
    b = load_file(killed / TRAINED[stage] / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after kill -9 and resume"
    rows_a, rows_b = cli_runs.metric_rows(straight), cli_runs.metric_rows(killed)
    assert [r["step"] for r in rows_b] == list(range(1, steps + 1))
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for key, value in ra.items():
            if not key.startswith(("time/", "throughput/tokens_per_s")):
                assert rb[key] == value, f"step {ra['step']}: {key}"


def test_a_dead_worker_is_named_and_the_run_exits_3(tiny_model_dir, tmp_path):
    steps = 200
    run_dir = tmp_path / "run"
    proc = _start(tiny_model_dir, run_dir, steps)
    first = run_dir / "checkpoints" / "step_000001"
    _wait_for(lambda: first.is_dir() and (run_dir / "workers.json").exists(), proc)
    victim = json.loads((run_dir / "workers.json").read_text())[1]
    os.kill(victim["pid"], signal.SIGKILL)
    code, err = _finish(proc)
    assert code == 3, err[-3000:]
    assert f"worker all/w1 (pid {victim['pid']}" in err and "rank 1" in err
    assert "resume with: placerl train" in err and err.strip().endswith("--resume")
    done = [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step")]
    assert 0 < len(done) < steps, "scenario: the worker died mid-run"
