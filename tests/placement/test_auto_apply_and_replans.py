"""``strategy: auto`` applies the pick's micro-batch/checkpointing/offload where the user left
them unset, pins its decision for resumes, and re-plans more than once with hysteresis."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from placement_helpers import CLUSTERS, auto_config

from placerl.config import dump_config
from placerl.config.compare import CONFIG_FILE, check_resume_config
from placerl.errors import UserError
from placerl.placement.auto import plan as auto_plan
from placerl.placement.auto import replan as auto_replan
from placerl.placement.auto.choose import Variant
from placerl.placement.auto.plan import _DECISIONS, decide, prepare_auto
from placerl.placement.auto.replan import choose, monitor_for
from placerl.placement.auto.state import STATE_FILE, Left, candidate_key, settings_of
from placerl.placement.cost.machine import CPU_DEFAULT
from placerl.placement.cost.schedule import StepPrediction
from placerl.placement.cost.workload import workload_from_config
from placerl.placement.plan import strategies
from placerl.placement.plan.plan import Sharding
from placerl.placement.search.enumerate import Candidate
from placerl.placement.search.search import Scored, score, search
from placerl.types import Role

CPU4 = ["placement.num_workers=4", "placement.threads_per_worker=1"]


@pytest.fixture(autouse=True)
def no_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("PLACERL_PROFILE_DIR", str(tmp_path / "none"))  # defaults, said so


def config(tmp_path, *overrides):
    return auto_config(tmp_path, "trainer.batch_size=4", *CPU4, *overrides)


def force_pick(monkeypatch, **settings):
    """The search's pick becomes its own best placement with ``settings`` (as if memory
    allowed only those): what a tight GPU would do, on this CPU."""
    real = auto_plan._search

    def forced(w, cluster, m, fixed=None, extra=()):
        result = real(w, cluster, m, fixed, extra)
        best = result.ranked[0].candidate
        pick = score(Candidate(**{**best.__dict__, **settings}), w, m)
        result.ranked.insert(0, pick)
        return result

    monkeypatch.setattr(auto_plan, "_search", forced)


def test_explicit_settings_hold_the_search(tmp_path):
    cfg = config(tmp_path, "trainer.micro_batch_size=2", "model.gradient_checkpointing=true")
    fixed = {"micro_batch": 2, "checkpointing": True}
    result = search(workload_from_config(cfg), CLUSTERS["cpu4"](), CPU_DEFAULT, fixed=fixed)
    assert result.ranked and all(
        s.candidate.micro_batch == 2 and s.candidate.checkpointing for s in result.ranked
    )
    d, lines = decide(cfg, CLUSTERS["cpu4"]())
    assert d.fixed == fixed and d.workload.micro_batch == 2 and d.workload.checkpointing
    assert "auto: trainer.micro_batch_size = 2 (yours: the search held to it)" in lines
    assert "auto: model.gradient_checkpointing = true (yours: the search held to it)" in lines
    free = search(workload_from_config(cfg), CLUSTERS["cpu4"](), CPU_DEFAULT)
    assert any(not s.candidate.checkpointing for s in free.ranked)  # the hold did something


def test_auto_applies_the_picks_settings_where_unset_and_says_why(tmp_path, monkeypatch):
    force_pick(monkeypatch, micro_batch=1, checkpointing=True)
    cfg = config(tmp_path)
    said: list[str] = []
    applied = prepare_auto(cfg, False, said.append)
    assert applied.trainer.micro_batch_size == 1 and applied.model.gradient_checkpointing
    assert applied.placement.strategy == "auto"
    # the user's explicit keys stay the user's: an applied value is not explicit
    assert "micro_batch_size" not in applied.trainer.model_fields_set
    assert cfg.trainer.micro_batch_size is None  # the given config is not mutated
    mb = next(line for line in said if "trainer.micro_batch_size" in line)
    assert mb.startswith("auto: trainer.micro_batch_size = 1 (applied: ")
    assert any(line.startswith("auto: placement.offload = false (applied: ") for line in said)
    assert not (tmp_path / "run" / STATE_FILE).exists()  # written once the run is built:
    monitor_for(applied)  # what train calls then
    state = json.loads((tmp_path / "run" / STATE_FILE).read_text())
    assert state["settings"]["micro_batch"] == 1 and state["replans"] == 0


def test_a_resume_applies_the_pinned_settings_so_the_config_compares_equal(tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        force_pick(patch, micro_batch=1)
        applied = prepare_auto(config(tmp_path), False, lambda _: None)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / CONFIG_FILE).write_text(dump_config(applied))  # what train writes
    monitor_for(applied)  # and then planner.json
    _DECISIONS.clear()  # a new process
    user = config(tmp_path)  # the same command, --resume; a fresh search would pick mb None
    assert decide(user, CLUSTERS["cpu4"]())[0].state.settings["micro_batch"] is None
    with pytest.raises(UserError, match="micro_batch_size"):
        check_resume_config(run_dir, user, False)  # unapplied, it would be refused
    other = config(tmp_path, "trainer.micro_batch_size=2")  # a changed key: refused, and
    with pytest.raises(UserError, match="micro_batch_size: 1 → 2"):
        check_resume_config(run_dir, prepare_auto(other, True, lambda _: None), False)
    assert json.loads((run_dir / STATE_FILE).read_text())["settings"]["micro_batch"] == 1
    said: list[str] = []
    resumed = prepare_auto(user, True, said.append)
    assert resumed.trainer.micro_batch_size == 1
    assert check_resume_config(run_dir, resumed, False) == []
    assert said[0].startswith("auto: resuming on the pinned plan")
    assert _DECISIONS[str(run_dir)].pinned


def fake(plan, step_s, micro_batch=None) -> Scored:
    return Scored(Candidate(plan, micro_batch), True, "fits", StepPrediction(step_s, {}, ()), 0, 8)


def key(s: Scored) -> str:
    return candidate_key(s.candidate.plan, settings_of(s.candidate))


def test_choose_needs_the_margin_and_goes_back_only_to_a_plan_measured_faster():
    cluster = CLUSTERS["cpu4"]()
    roles = (Role.ACTOR, Role.ROLLOUT, Role.REWARD, Role.REFERENCE)
    flat = strategies.flatten(roles, cluster, rule_reward=True)
    sep = strategies.separate(roles, cluster, rule_reward=True)
    a, b, c = fake(flat, 1.0), fake(sep, 0.5), fake(flat, 0.6, micro_batch=2)
    assert choose(key(a), 1.0, 1.0, [b, a], [], 0.15)[0] is b
    assert choose(key(a), 1.0, 1.0, [fake(sep, 0.9), a], [], 0.15)[0] is None  # within margin
    assert choose(key(a), 1.0, 1.0, [a, b], [], 0.15)[0] is None  # the current is the best
    # on b, measuring 1.0 s a step; a was left measuring 1.2 s: not back to a on prediction
    left = [Left(key(a), "flatten", 0, 5, 1.2, 1.0)]
    fast_a = fake(flat, 0.3)
    best, notes = choose(key(b), 1.0, 1.0, [fast_a], left, 0.15)
    assert best is None and "not going back" in notes[0]
    assert choose(key(b), 1.0, 1.0, [fast_a, c], left, 0.15)[0] is c  # the next one instead
    measured_faster = [Left(key(a), "flatten", 0, 5, 0.8, 1.0)]
    assert choose(key(b), 1.0, 1.0, [fast_a], measured_faster, 0.15)[0] is fast_a


def test_the_monitor_replans_twice_then_stays_within_max_replans(tmp_path, monkeypatch):
    """A -> B -> C, each after replan_after steps on the Plan, each trial measuring faster
    than the Plan before it (so kept); on C a faster A is refused (max_replans 2), and the
    state on disk carries the history across the restarts."""
    cfg = config(tmp_path, "placement.replan_after=2", "placement.max_replans=2")
    prepare_auto(cfg, False, lambda _: None)
    d = _DECISIONS[str(cfg.run_dir)]
    roles, cluster = tuple(d.plan.roles), d.cluster
    flat = strategies.flatten(roles, cluster, rule_reward=True)
    sep = strategies.separate(roles, cluster, rule_reward=True)
    plans = {"flatten": flat, "separate": sep}
    # each refit predicts the next Plan of A -> B -> C -> A ten times faster than the current
    order = [fake(plans[d.plan.strategy], 1e-6)]
    order.append(fake(sep if d.plan.strategy == "flatten" else flat, 1e-6))
    order.append(fake(plans[d.plan.strategy], 1e-6, micro_batch=2))
    calls = []

    def ranked(self, machine):
        calls.append(self.decision.state.name)
        return [order[len(calls) % 3]]

    monkeypatch.setattr(auto_replan.PlannerMonitor, "rank", ranked)
    names = [d.state.name]
    for replans in range(3):
        monitor = monitor_for(cfg)
        for step in (1, 2):
            # each Plan measures faster than the last: every trial is kept
            metrics = monitor.observe(2 * replans + step, {"time/step": 1.0 / (1 + replans)})
            assert metrics["planner/replans"] == replans
        if replans == 2:
            assert monitor.pending is None and "max_replans 2" in monitor.messages[-1]
            break
        assert monitor.pending is not None and "faster" in monitor.messages[-1]
        replan = monitor.replan_now(cfg, 2 * replans + 2)
        assert replan.config is cfg and f"({replans + 1} of at most 2)" in replan.message
        _DECISIONS.clear()  # train resumes in a fresh stage: the state comes from disk
        prepare_auto(replan.config, True, lambda _: None)
        names.append(_DECISIONS[str(cfg.run_dir)].state.name)
    assert names[1:] == [order[1].name, order[2].name] and names[0] != names[1]
    state = json.loads((tmp_path / "run" / STATE_FILE).read_text())
    assert state["replans"] == 2 and state["since"] == 4 and state["checked"]
    assert [x["until"] for x in state["left"]] == [2, 4]
    assert [x["measured_step_s"] for x in state["left"]] == [1.0, 0.5]
    assert sum("re-planned at step" in e for e in state["events"]) == 2


def test_plan_auto_ranks_what_auto_would_run_holding_your_settings(tmp_path):
    from placerl.placement.auto.plan import run_search

    result, _ = run_search(config(tmp_path, "trainer.micro_batch_size=2"), None, None)
    assert "held to the settings you set: trainer.micro_batch_size=2" in result.notes
    assert all(s.candidate.micro_batch == 2 for s in result.ranked if s.feasible)


def run_monitored(cfg, seconds, steps, say=lambda _: None):
    """``steps`` steps of ``cfg`` as ``train`` drives the planner, each measuring
    ``seconds(state)``: on a pending switch, ``replan_now`` and a resume on the new Plan.
    Returns the Plan names step by step and every message."""
    prepare_auto(cfg, False, say)
    monitor = monitor_for(cfg)
    names, messages = [], []
    for step in range(1, steps + 1):
        state = _DECISIONS[str(cfg.run_dir)].state
        names.append(state.name)
        monitor.observe(step, {"time/step": seconds(state)})
        messages += monitor.messages
        monitor.messages.clear()
        if monitor.pending is not None and step < steps:
            messages.append(monitor.replan_now(cfg, step).message)
            _DECISIONS.clear()  # train resumes in a fresh stage: the state comes from disk
            prepare_auto(cfg, True, say)
            monitor = monitor_for(cfg)
    return names, messages


def test_a_wrong_start_ends_on_the_best_plan_within_bounded_steps(tmp_path, monkeypatch):
    """A corrupted profile (the in-process controller at 0.3 s a step) starts the run on a
    worker plan measuring 10 s a step; local, predicted ~0.3 s and within the model's
    uncertainty of that, is tried, measures 1 s, and is kept: the run is on it from step 5
    of 40 (replan_after 2: 2 steps on the start, 2 on the trial), and stays."""
    from placement_helpers import quiet_probe, store_profile_of

    from placerl.placement.cost.shapes import tiny_default

    quiet_probe(monkeypatch)
    store_profile_of(CPU_DEFAULT.with_(step_overhead=0.3), tiny_default())
    cfg = config(tmp_path, "placement.replan_after=2", "trainer.steps=40")
    names, messages = run_monitored(
        cfg, lambda st: 1.0 if st.plan.strategy == "local" else 10.0, 40
    )
    assert names[0] != "local" and set(names[4:]) == {"local"}
    state = json.loads((tmp_path / "run" / STATE_FILE).read_text())
    assert state["replans"] == 1 and not state["trial"] and state["checked"]
    assert any("trying it" in m for m in messages)
    assert any(
        m.startswith("planner: trial of local: measured 1 s") and "kept" in m for m in messages
    )
    assert len(state["switch_costs"]) == 1 and state["left"][0]["measured_step_s"] == 10.0


def test_a_trial_that_measures_slower_goes_back_and_is_never_tried_again(tmp_path, monkeypatch):
    """Separate is predicted 100x faster each refit but measures 2 s against the start's 1 s:
    the run goes back (the 30 steps left repay the switch), and the next refit, predicting it
    fast again, does not go back to it; max_replans bounds the switches."""
    cfg = config(tmp_path, "placement.replan_after=2", "trainer.steps=30")
    prepare_auto(cfg, False, lambda _: None)
    d = _DECISIONS[str(cfg.run_dir)]
    sep = strategies.separate(tuple(d.plan.roles), d.cluster, rule_reward=True)
    first = d.state.candidate

    def ranked(self, machine):  # separate predicted fast, then the start
        fast = score(Candidate(sep), self.decision.workload, machine)
        start = score(first, self.decision.workload, machine)
        return [replace(fast, prediction=replace(fast.prediction, step_s=1e-3)), start]

    monkeypatch.setattr(auto_replan.PlannerMonitor, "rank", ranked)
    _DECISIONS.clear()
    names, messages = run_monitored(
        cfg, lambda st: 2.0 if st.plan.strategy == "separate" else 1.0, 12
    )
    start, trial = names[0], Candidate(sep).name
    assert names[:6] == [start, start, trial, trial, start, start]
    assert set(names[6:]) == {start}
    assert any(f"trial of {trial}: measured 2 s" in m and "not faster" in m for m in messages)
    assert any("(measured faster before)" in m for m in messages)  # the return
    assert any("not going back" in m for m in messages)
    state = json.loads((tmp_path / "run" / STATE_FILE).read_text())
    assert state["replans"] == 2 and [x["measured_step_s"] for x in state["left"]] == [1.0, 2.0]


def test_a_switch_must_repay_itself_over_the_steps_left():
    cluster = CLUSTERS["cpu4"]()
    roles = (Role.ACTOR, Role.ROLLOUT, Role.REWARD, Role.REFERENCE)
    flat = strategies.flatten(roles, cluster, rule_reward=True)
    a, b = fake(flat, 1.0), fake(strategies.separate(roles, cluster, rule_reward=True), 0.5)
    assert choose(key(a), 1.0, 1.0, [b, a], [], 0.15, 0.15, (100, 10.0))[0] is b
    best, notes = choose(key(a), 1.0, 1.0, [b, a], [], 0.15, 0.15, (5, 10.0))
    assert best is None and "repay a switch" in notes[0]
    # within the uncertainty: predicted 1.1 s against 1.0 s measured, ±50% -> tried
    slow = fake(strategies.separate(roles, cluster, rule_reward=True), 1.1)
    assert choose(key(a), 1.0, 1.0, [a, slow], [], 0.15, 0.5, (100, 1.0))[0] is slow
    assert choose(key(a), 1.0, 1.0, [a, slow], [], 0.15, 0.15, (100, 1.0))[0] is None


def test_a_variant_of_the_running_plan_is_judged_against_its_refit_prediction():
    """After a refit, a candidate that only varies the running Plan (another sharding) is
    tried only if the refit model says it beats the running Plan by the margin, within the
    calibration's uncertainty; a Plan of another layout keeps the wider uncertainty."""
    cluster = CLUSTERS["cpu4"]()
    roles = (Role.ACTOR, Role.ROLLOUT, Role.REWARD, Role.REFERENCE)
    flat = strategies.flatten(roles, cluster, rule_reward=True)
    full = strategies.flatten(roles, cluster, rule_reward=True, sharding=Sharding.FULL)
    sep = strategies.separate(roles, cluster, rule_reward=True)
    running = fake(flat, 2.48)
    variant = Variant.of(flat, 0.15)
    assert variant.covers(fake(full, 1.0)) and not variant.covers(fake(sep, 1.0))
    budget = (25, 1.0)
    # predicted 1% faster than the running Plan's refit prediction, at ±37%: not a trial
    sharded = fake(full, 2.45)
    args = (key(running), 2.48, 2.51, [sharded, running], [], 0.15, 0.37, budget)
    assert choose(*args)[0] is sharded  # as before, without the variant rule
    assert choose(*args, variant)[0] is None
    # another layout with the same prediction is still tried at ±37%
    other = fake(sep, 2.45)
    assert (
        choose(key(running), 2.48, 2.51, [other, running], [], 0.15, 0.37, budget, variant)[0]
        is other
    )
    # a variant the refit model puts 30% below the running Plan is tried
    fast = fake(full, 2.48 * 0.7)
    assert (
        choose(key(running), 2.48, 2.51, [fast, running], [], 0.15, 0.37, budget, variant)[0]
        is fast
    )
