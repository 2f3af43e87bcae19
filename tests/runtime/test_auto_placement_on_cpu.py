"""``placement.strategy: auto`` end to end on Ray: the pick runs with the micro-batch it chose
(trained like an explicit run with that micro-batch, and resumed without a config refusal),
every step logs the predicted and measured step time, and forced re-plans (two, then the
``max_replans`` bound) end the same training as a run on the final Plan."""

from __future__ import annotations

import io
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
    monkeypatch.setenv("PLACERL_PROFILE_DIR", str(tmp_path / "profiles"))  # defaults
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def flatten_of(d):
    return strategies.flatten(tuple(d.plan.roles), d.cluster, rule_reward=True)


def force_flatten(monkeypatch, micro_batch):
    """The search's pick becomes plain Flatten with ``micro_batch`` (as a tight memory would
    make it on a GPU), so an explicit run can say the same."""
    real = auto_plan._search

    def forced(w, cluster, m, fixed=None):
        result = real(w, cluster, m, fixed)
        roles = tuple(result.ranked[0].candidate.plan.roles)
        plan = strategies.flatten(roles, cluster, rule_reward=True)
        result.ranked.insert(0, score(Candidate(plan, micro_batch), w, m))
        return result

    monkeypatch.setattr(auto_plan, "_search", forced)


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
