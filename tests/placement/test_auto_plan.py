"""``placement.strategy: auto``: the pick, the per-step metrics, the refit and re-plan advice."""

from __future__ import annotations

import pytest
from placement_helpers import CLUSTERS, auto_config

from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.placement.auto.plan import _DECISIONS
from placerl.placement.auto.replan import PlannerMonitor, monitor_for, refit
from placerl.placement.cost.machine import CPU_DEFAULT
from placerl.placement.cost.phases import step_phases
from placerl.placement.from_config import plan_from_config


@pytest.fixture(autouse=True)
def no_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("PLACERL_PROFILE_DIR", str(tmp_path / "none"))  # defaults, said so


config = auto_config


def test_auto_picks_a_valid_plan_and_says_why(tmp_path):
    plan = plan_from_config(config(tmp_path), cluster=CLUSTERS["cpu4"]())
    assert plan.strategy in ("flatten", "separate")
    assert plan.notes[0].startswith("auto: ") and "predicted" in plan.notes[0]
    stale = plan_from_config(
        config(tmp_path, "placement.max_staleness=1"), cluster=CLUSTERS["cpu4"]()
    )
    assert stale.strategy == "separate"  # the only plans that run stale batches


def test_refit_scales_each_kind_of_rate_by_the_measured_ratio():
    m = refit(
        CPU_DEFAULT,
        {"generate": 1.0, "update": 2.0, "reference": 0.5},
        {"generate": [3.0, 3.0, 9.0], "update": [1.0], "reference": [0.5]},
    )
    assert m.decode_flops == pytest.approx(CPU_DEFAULT.decode_flops / 3)
    assert m.decode_overhead_per_layer == pytest.approx(CPU_DEFAULT.decode_overhead_per_layer * 3)
    assert m.train_flops == pytest.approx(CPU_DEFAULT.train_flops * 2)
    assert m.forward_flops == CPU_DEFAULT.forward_flops and "refit" in m.source


def test_monitor_logs_the_error_and_recommends_a_replan_when_generation_is_slower(tmp_path):
    cfg = config(tmp_path, "placement.max_staleness=1", "placement.replan_after=3")
    plan = plan_from_config(cfg, cluster=CLUSTERS["cpu4"]())
    monitor = monitor_for(cfg)
    assert isinstance(monitor, PlannerMonitor) and monitor.decision.plan is plan
    gen_slots = plan.group("gen").size
    d = monitor.decision
    predicted = {p.name: p.seconds for p in step_phases(d.plan, d.workload, d.machine)}
    # the run generates 20x slower than predicted, everything else as predicted; as the
    # controller of a pipelined run sees it: the generation only as the wait for it
    gen = 20 * predicted["generate"]
    trainer = sum(v for k, v in predicted.items() if k not in ("generate", "sync"))
    metrics = {f"time/{k}": v for k, v in predicted.items() if k not in ("generate", "controller")}
    metrics |= {"time/generate": 1e-5, "time/wait_rollout": max(0.0, gen - trainer)}
    metrics["time/step"] = max(gen, trainer) + predicted.get("sync", 0.0)
    out = monitor.observe(1, metrics)
    assert out["planner/predicted_step_s"] == d.predicted_step_s
    assert out["planner/error"] == pytest.approx(metrics["time/step"] / d.predicted_step_s - 1)
    monitor.observe(2, metrics)
    assert monitor.recommendation is None and not monitor.messages
    monitor.observe(3, metrics)  # replan_after = 3
    best = monitor.recommendation
    assert best is not None and best.candidate.plan.group("gen").size > gen_slots
    assert "faster" in monitor.messages[0] and monitor.pending is best.candidate.plan


def test_the_monitor_reads_a_generation_where_the_controller_waits_for_it():
    from placerl.placement.auto.replan import observed_phases

    times = {"generate": 0.001, "wait_rollout": 0.3, "update": 0.5, "sync": 0.1}
    # unpipelined (Flatten): the sample launched at the step's start is awaited at collect
    flat = observed_phases(times, 1.0, pipelined=False)
    assert flat["generate"] == pytest.approx(0.301) and "wait_rollout" not in flat
    assert flat["controller"] == pytest.approx(1.0 - 0.901)  # the step less every phase
    # pipelined and waited for: the rollout's cycle is the step less the sync
    assert observed_phases(times, 1.0, pipelined=True)["generate"] == pytest.approx(0.9)
    # pipelined and never waited for: hidden, its speed unknown
    hidden = observed_phases(times | {"wait_rollout": 0.01}, 0.7, pipelined=True)
    assert "generate" not in hidden and hidden["update"] == 0.5
    # a local background rollout times itself
    ahead = observed_phases(times | {"ahead/generate": 0.4}, 1.0, pipelined=True)
    assert ahead["generate"] == 0.4
    assert "generate" not in observed_phases({"update": 0.5}, 0.6, pipelined=False)


def test_refit_scales_the_controllers_own_work_by_its_measured_gap():
    m = CPU_DEFAULT.with_(step_overhead=0.002, worker_step_overhead=0.004)
    out = refit(m, {"controller": 0.004}, {"controller": [0.006, 0.008, 0.01]})
    assert out.worker_step_overhead == pytest.approx(0.008)
    assert out.step_overhead == pytest.approx(0.004)


def test_no_monitor_unless_auto(tmp_path):
    cfg = load_config(
        None, ["stage=grpo", "rollout.samples_per_prompt=2", f"run_dir={tmp_path}"], RunConfig
    )
    _DECISIONS[str(tmp_path)] = object()
    assert monitor_for(cfg) is None
