"""When a worker dies the run stops at once, says who died and how to resume, and resuming
finishes the run as if nothing had happened; a cluster too small is one clear error."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import torch
from safetensors.torch import load_file

from placerl.cli import main
from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.errors import UserError
from placerl.trainer import train
from tests.conftest import fast_overrides

ray = pytest.importorskip("ray")

STEPS = 6
EXTRA = [
    "reward.function=tests.runtime.slow_reward:slow_length_reward",  # 0.3 s per step
    "data.num_eval=0",
]
FLATTEN = [
    "placement.strategy=flatten",
    "placement.num_workers=2",
    "placement.threads_per_worker=1",
]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_worker_is_named_and_the_printed_command_resumes_the_run(
    tiny_model_dir, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    config = tmp_path / "grpo.yaml"
    config.write_text("stage: grpo\n")
    overrides = [
        o for o in fast_overrides(tiny_model_dir, run_dir, "grpo", STEPS) if "run_dir" not in o
    ]
    argv = ["train", str(config), *overrides, *EXTRA, *FLATTEN, "--run-dir", str(run_dir)]
    exit_code: list[int] = []
    thread = threading.Thread(target=lambda: exit_code.append(main(argv)))
    thread.start()
    first = run_dir / "checkpoints" / "step_000001"
    wait_for(lambda: first.is_dir() and (run_dir / "workers.json").exists())
    victim = json.loads((run_dir / "workers.json").read_text())[1]
    os.kill(victim["pid"], signal.SIGKILL)
    thread.join(timeout=120)
    assert not thread.is_alive(), "the controller must notice the dead worker"

    err = capsys.readouterr().err
    assert exit_code == [3]
    assert f"worker all/w1 (pid {victim['pid']}" in err
    assert "rank 1" in err
    resume = f"resume with: placerl train {config} "
    assert resume in err and err.strip().endswith("--resume")
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints and all(name.startswith("step_") for name in checkpoints), checkpoints
    assert len(checkpoints) < STEPS, "scenario: the worker died mid-run"

    assert main([*argv, "--resume"]) == 0
    logged = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").open()]
    assert sorted(logged) == list(range(1, STEPS + 1)), "every step logged once"

    straight = tmp_path / "straight"  # the same run, never interrupted, in one process
    cfg = load_config(
        None, [*fast_overrides(tiny_model_dir, straight, "grpo", STEPS), *EXTRA], RunConfig
    )
    train(cfg)
    a, b = (load_file(d / "policy" / "model.safetensors") for d in (straight, run_dir))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5, msg=key)


def test_a_cluster_without_the_asked_cpus_is_one_clear_error(tiny_model_dir, tmp_path):
    overrides = fast_overrides(tiny_model_dir, tmp_path / "run", "grpo", 1)
    asks_three = [*FLATTEN[:1], "placement.num_workers=3", "placement.threads_per_worker=1"]
    cfg = load_config(None, [*overrides, *asks_three], RunConfig)
    with pytest.raises(UserError, match=r"asks for 3 CPU .* the Ray cluster has 2 CPU") as err:
        train(cfg)
    assert err.value.where == "placement"


def test_an_address_where_no_ray_listens_is_one_clear_error_not_a_long_retry():
    from placerl.runtime.ray.group import probe

    with pytest.raises(UserError, match="cannot reach a Ray cluster at '127.0.0.1:1'") as err:
        probe("127.0.0.1:1")
    assert err.value.where == "placement.ray_address"
    with pytest.raises(UserError, match="host:port"):
        probe("nonsense")
