"""``placement.strategy: auto`` end to end on Ray: the pick runs with the micro-batch it chose
(trained like an explicit run with that micro-batch, and resumed without a config refusal),
every step logs the predicted and measured step time, forced re-plans (two, then the
``max_replans`` bound) end the same training as a run on the final Plan, and a run started on
a wrong Plan (a corrupted profile) tries the local plan, keeps it, and trains like a run on it.

The step times the planner *judges* by are made up per Plan (``fake_step_times``): a test
never asserts timings, and which Plan is faster must not depend on this machine's load. The
training, the checkpoints, the switches and the restores are real."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import pytest
from rich.console import Console

from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.logging import read_metrics
from placerl.placement.auto import plan as auto_plan
from placerl.placement.auto import replan as auto_replan
from placerl.placement.plan import strategies
from placerl.placement.search.enumerate import Candidate
from placerl.placement.search.search import score
from placerl.trainer import train
from tests.conftest import fast_overrides
from tests.placement.placement_helpers import quiet_probe, store_profile_of
from tests.runtime.test_invariants_on_cpu import (
    COMMON,
    GRPO,
    TWO_WORKERS,
    assert_same_trajectory,
    assert_same_weights,
)

ray = pytest.importorskip("ray")
KEYS = ["loss/policy", "loss/kl", "actor/grad_norm", "kl/mean"]


@pytest.fixture
def local_ray(tmp_path, monkeypatch):
    monkeypatch.setenv("PLACERL_PROFILE_DIR", str(tmp_path / "profiles"))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def flatten_of(d):
    return strategies.flatten(tuple(d.plan.roles), d.cluster, rule_reward=True)


def force_flatten(monkeypatch, micro_batch):
    """The search's pick becomes plain Flatten with ``micro_batch`` (as a tight memory would
    make it on a GPU), so an explicit run can say the same."""
    real = auto_plan._search

    def forced(w, cluster, m, fixed=None, extra=()):
        result = real(w, cluster, m, fixed, extra)
        roles = tuple(result.ranked[0].candidate.plan.roles)
        plan = strategies.flatten(roles, cluster, rule_reward=True)
        result.ranked.insert(0, score(Candidate(plan, micro_batch), w, m))
        return result

    monkeypatch.setattr(auto_plan, "_search", forced)


def fake_step_times(monkeypatch, seconds):
    """The monitor sees ``seconds(state)`` as each step's time (the training runs for real)."""
    observe = auto_replan.PlannerMonitor.observe

    def faked(self, step, metrics):
        return observe(self, step, {**metrics, "time/step": seconds(self.decision.state)})

    monkeypatch.setattr(auto_replan.PlannerMonitor, "observe", faked)


def _metrics(run_dir):
    by_step = {m["step"]: m for m in read_metrics(run_dir) if m.get("step", 0) > 0}
    return [by_step[k] for k in sorted(by_step)]


def _base(tiny_model_dir, tmp_path, steps):
    base = [*fast_overrides(tiny_model_dir, tmp_path / "x", "grpo", steps), *COMMON, *GRPO]
    return [*base, *TWO_WORKERS]


@pytest.mark.slow
def test_auto_applies_its_micro_batch_trains_like_an_explicit_run_and_resumes(
    tiny_model_dir, tmp_path, monkeypatch, local_ray
):
    force_flatten(monkeypatch, micro_batch=1)
    base = _base(tiny_model_dir, tmp_path, 2)
    auto = ["placement.strategy=auto", "placement.replan_after=2", "placement.replan_margin=100"]
    auto.append(f"run_dir={tmp_path / 'a'}")
    out = io.StringIO()
    train(load_config(None, [*base, *auto], RunConfig), console=Console(file=out, width=300))
    explicit = ["placement.strategy=flatten", "trainer.micro_batch_size=1"]
    train(load_config(None, [*base, *explicit, f"run_dir={tmp_path / 'b'}"], RunConfig))
    log = out.getvalue()
    assert "auto: trainer.micro_batch_size = 1 (applied: " in log
    assert "keeping it" in log  # the refit after 2 steps found nothing faster
    steps = _metrics(tmp_path / "a")
    for m in steps:
        assert m["planner/error"] == pytest.approx(
            m["time/step"] / m["planner/predicted_step_s"] - 1, rel=1e-3
        )
    assert_same_trajectory(_metrics(tmp_path / "b"), steps, KEYS)
    assert_same_weights(tmp_path / "b" / "policy", tmp_path / "a" / "policy")
    assert "micro_batch_size: 1\n" in (tmp_path / "a" / "config.yaml").read_text()
    # the same command, resumed further: the pinned settings come back, no config refusal
    monkeypatch.undo()
    monkeypatch.setenv("PLACERL_PROFILE_DIR", str(tmp_path / "profiles"))
    more = load_config(None, [*base, *auto, "trainer.steps=3"], RunConfig)
    out = io.StringIO()
    train(more, resume=True, console=Console(file=out, width=300))
    assert "resuming on the pinned plan flatten mb=1" in out.getvalue()
    assert [m["step"] for m in _metrics(tmp_path / "a")] == [1, 2, 3]


@pytest.mark.slow
def test_two_forced_replans_train_like_a_run_on_the_final_plan(
    tiny_model_dir, tmp_path, monkeypatch, local_ray
):
    """Flatten -> Separate after step 1 -> Flatten with checkpointing after step 2 (each a
    checkpoint, a new runtime, a restore; micro-batch 1 throughout); the third refit is held
    by max_replans 2. The same losses and final weights, within the invariant tests'
    tolerance, as a run on the final Plan (at max_staleness 0 every Plan trains alike)."""
    force_flatten(monkeypatch, micro_batch=1)
    targets = []

    def ranked(self, machine):  # each refit: the next Plan, predicted 1000x faster
        d = self.decision
        sep = strategies.separate(tuple(d.plan.roles), d.cluster, rule_reward=True)
        nxt = [Candidate(sep, 1), Candidate(flatten_of(d), 1, True), Candidate(sep, 2)]
        s = score(nxt[len(targets) % 3], d.workload, machine)
        targets.append(s.name)
        return [replace(s, prediction=replace(s.prediction, step_s=s.step_s / 1000))]

    monkeypatch.setattr(auto_replan.PlannerMonitor, "rank", ranked)
    # each new Plan measures faster than the one before: every trial is kept
    fake_step_times(monkeypatch, lambda state: 100.0 / (1 + state.replans))
    base = _base(tiny_model_dir, tmp_path, 4)
    auto = ["placement.strategy=auto", "placement.replan_after=1", "placement.max_replans=2"]
    out = io.StringIO()
    cfg = load_config(None, [*base, *auto, f"run_dir={tmp_path / 'a'}"], RunConfig)
    train(cfg, console=Console(file=out, width=300))
    final = ["placement.strategy=flatten", "trainer.micro_batch_size=1"]
    final.append("model.gradient_checkpointing=true")
    train(load_config(None, [*base, *final, f"run_dir={tmp_path / 'b'}"], RunConfig))
    log = " ".join(out.getvalue().split())  # the console wraps long lines
    assert targets == ["separate gen=1/2 mb=1", "flatten mb=1 ckpt", "separate gen=1/2 mb=2"]
    assert "re-planned at step 1 (1 of at most 2): flatten mb=1 -> separate gen=1/2 mb=1" in log
    assert (
        "re-planned at step 2 (2 of at most 2): separate gen=1/2 mb=1 -> flatten mb=1 ckpt" in log
    )
    assert "placement.max_replans 2): staying" in log
    assert "auto: model.gradient_checkpointing = true (applied: " in log
    replanned, straight = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert [m["step"] for m in replanned] == [1, 2, 3, 4]
    assert [m["planner/replans"] for m in replanned] == [0, 1, 2, 2]  # auto throughout
    assert_same_trajectory(straight, replanned, KEYS)
    assert_same_weights(tmp_path / "b" / "policy", tmp_path / "a" / "policy")
    assert "strategy: auto" in (tmp_path / "a" / "config.yaml").read_text()


@pytest.mark.slow
def test_a_wrong_start_tries_the_local_plan_keeps_it_and_trains_like_a_run_on_it(
    tiny_model_dir, tmp_path, monkeypatch, local_ray
):
    """A profile that puts the in-process controller at 0.3 s a step makes every worker plan
    the pick; those measure 100 s a step here, local 10 s. After 2 steps the refit (of the
    workers' controller only) still predicts local at ~0.3 s: within the model's uncertainty
    of the measured 100 s, so it is tried, measures faster, and is kept; the run ends on it
    (2 switches at most, 6 steps) and trains like a run on local from the start."""
    from placerl.placement.cost.machine import CPU_DEFAULT
    from placerl.placement.cost.workload import policy_shape

    base = _base(tiny_model_dir, tmp_path, 6)
    auto = ["placement.strategy=auto", "placement.replan_after=2", "placement.max_replans=2"]
    cfg = load_config(None, [*base, *auto, f"run_dir={tmp_path / 'a'}"], RunConfig)
    quiet_probe(monkeypatch)  # the profile's conditions hold now
    store_profile_of(CPU_DEFAULT.with_(step_overhead=0.3), policy_shape(cfg))
    fake_step_times(monkeypatch, lambda state: 10.0 if state.plan.strategy == "local" else 100.0)
    out = io.StringIO()
    train(cfg, console=Console(file=out, width=300))
    local = ["placement.strategy=local", "placement.device=cpu"]
    train(load_config(None, [*base, *local, f"run_dir={tmp_path / 'b'}"], RunConfig))
    log = " ".join(out.getvalue().split())
    state = json.loads((tmp_path / "a" / "planner.json").read_text())
    assert state["plan"]["strategy"] == "local" and not state["trial"]
    assert state["left"][0]["name"] != "local" and state["replans"] <= 2
    assert "checkpointing and trying it" in log and "(a trial)" in log
    assert "trial of local: measured 10 s a step against 100 s" in log and ": kept" in log
    assert "switched to local in" in log and len(state["switch_costs"]) == 1
    replanned, straight = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert [m["step"] for m in replanned] == [1, 2, 3, 4, 5, 6]
    assert "planner/switch_s" in replanned[2]  # the first step on local
    assert_same_trajectory(straight, replanned, KEYS)
    assert_same_weights(tmp_path / "b" / "policy", tmp_path / "a" / "policy")


@pytest.mark.slow
def test_a_switch_to_a_sharded_plan_restores_the_unsharded_checkpoint(
    tiny_model_dir, tmp_path, monkeypatch, local_ray
):
    """Flatten -> Flatten with FSDP after step 2 (the refit predicts it 1000x faster, it
    measures faster): the sharded workers load an optimizer state saved unsharded (keyed by
    position, not by name) and train like a run on FSDP from the start."""
    from placerl.placement.plan.plan import Sharding
    from placerl.placement.search.enumerate import with_model_placement

    force_flatten(monkeypatch, micro_batch=None)

    def ranked(self, machine):
        d = self.decision
        full = with_model_placement(flatten_of(d), d.workload, None, Sharding.FULL, None)
        s = score(Candidate(full), d.workload, machine)
        return [replace(s, prediction=replace(s.prediction, step_s=s.step_s / 1000))]

    monkeypatch.setattr(auto_replan.PlannerMonitor, "rank", ranked)
    fake_step_times(monkeypatch, lambda state: 100.0 / (1 + state.replans))
    base = _base(tiny_model_dir, tmp_path, 4)
    auto = ["placement.strategy=auto", "placement.replan_after=2", "placement.max_replans=1"]
    out = io.StringIO()
    train(
        load_config(None, [*base, *auto, f"run_dir={tmp_path / 'a'}"], RunConfig),
        console=Console(file=out, width=300),
    )
    sharded = ["placement.strategy=flatten", "placement.sharding=full"]
    train(load_config(None, [*base, *sharded, f"run_dir={tmp_path / 'b'}"], RunConfig))
    log = " ".join(out.getvalue().split())
    assert "re-planned at step 2 (1 of at most 1): flatten -> flatten full (a trial)" in log
    assert "trial of flatten full" in log and ": kept" in log
    replanned, straight = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert [m["step"] for m in replanned] == [1, 2, 3, 4]
    assert_same_trajectory(straight, replanned, KEYS)
    assert_same_weights(tmp_path / "b" / "policy", tmp_path / "a" / "policy")
