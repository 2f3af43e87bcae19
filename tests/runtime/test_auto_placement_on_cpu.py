"""``placement.strategy: auto`` end to end on Ray: the pick runs, every step logs the
predicted and measured step time, and the refit after ``replan_after`` steps is reported."""

from __future__ import annotations

import pytest

from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.logging import read_metrics
from placerl.trainer import train
from tests.conftest import fast_overrides
from tests.runtime.test_invariants_on_cpu import COMMON, GRPO, TWO_WORKERS

ray = pytest.importorskip("ray")


@pytest.mark.slow
def test_auto_runs_the_pick_and_logs_predicted_and_measured_step_time(
    tiny_model_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("PLACERL_PROFILE_DIR", str(tmp_path / "profiles"))  # defaults
    run = tmp_path / "run"
    overrides = [*fast_overrides(tiny_model_dir, run, "grpo", 3), *COMMON, *GRPO, *TWO_WORKERS]
    overrides += ["placement.strategy=auto", "placement.replan_after=2"]
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        train(load_config(None, overrides, RunConfig))
    finally:
        ray.shutdown()
    steps = [m for m in read_metrics(run) if m.get("step", 0) > 0 and "time/step" in m]
    assert len(steps) == 3
    for m in steps:
        assert m["planner/predicted_step_s"] > 0
        assert m["planner/error"] == pytest.approx(
            m["time/step"] / m["planner/predicted_step_s"] - 1, rel=1e-3
        )
