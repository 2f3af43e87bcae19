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
    overrides += [
        "placement.strategy=auto",
        "placement.replan_after=2",
        "placement.replan_margin=100",
    ]
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


def _metrics(run_dir):
    by_step = {m["step"]: m for m in read_metrics(run_dir) if m.get("step", 0) > 0}
    return [by_step[k] for k in sorted(by_step)]


@pytest.mark.slow
def test_a_forced_replan_mid_run_trains_like_a_run_on_the_second_plan(
    tiny_model_dir, tmp_path, monkeypatch
):
    """Re-plan after step 2 of 4 (checkpoint, new runtime on the other Plan, restore, go
    on): the same losses and final weights, within the invariant tests' tolerance, as a run
    that used the second Plan from the start (at max_staleness 0 every Plan trains alike)."""
    from placerl.placement import auto_plan, strategies
    from tests.runtime.test_invariants_on_cpu import assert_same_trajectory, assert_same_weights

    monkeypatch.setenv("PLACERL_PROFILE_DIR", str(tmp_path / "profiles"))
    chosen = {}

    def forced(self):
        d = self.decision
        roles = tuple(d.plan.roles)
        if d.plan.strategy == "flatten":
            self.pending = strategies.separate(roles, d.cluster, rule_reward=True)
        else:
            self.pending = strategies.flatten(roles, d.cluster, rule_reward=True)
        chosen["strategy"] = self.pending.strategy
        return None

    monkeypatch.setattr(auto_plan.PlannerMonitor, "replan", forced)
    base = [*fast_overrides(tiny_model_dir, tmp_path / "x", "grpo", 4), *COMMON, *GRPO]
    base += TWO_WORKERS
    auto = ["placement.strategy=auto", "placement.replan_after=2", f"run_dir={tmp_path / 'a'}"]
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        train(load_config(None, [*base, *auto], RunConfig))
        second = [f"placement.strategy={chosen['strategy']}", f"run_dir={tmp_path / 'b'}"]
        train(load_config(None, [*base, *second], RunConfig))
    finally:
        ray.shutdown()
    replanned, straight = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert [m["step"] for m in replanned] == [1, 2, 3, 4]
    assert "planner/error" in replanned[1] and "planner/error" not in replanned[2]  # now custom
    keys = ["loss/policy", "loss/kl", "actor/grad_norm", "kl/mean"]
    assert_same_trajectory(straight, replanned, keys)
    assert_same_weights(tmp_path / "b" / "policy", tmp_path / "a" / "policy")
