"""The planner knows episodes (issue 24 item 7) and DAPO's extra sampling rounds (issue 23
item 2): generation as rounds of decode, observation prefill and tool waits; the long tail of
the slowest episode; Separate hiding tool waits that a synchronous plan serialises; and the
lines ``plan --auto`` prints about both."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
from placement_helpers import CLUSTERS, auto_config

from placerl.cli import main
from placerl.placement.cost import episodes as ep
from placerl.placement.cost import time as ct
from placerl.placement.cost.machine import CPU_DEFAULT
from placerl.placement.cost.phases import Phase, step_phases
from placerl.placement.cost.schedule import predict_step
from placerl.placement.cost.shapes import tiny_default
from placerl.placement.cost.workload import EpisodeShape, Workload, workload_from_config
from placerl.placement.plan import strategies
from placerl.placement.plan.plan import DeviceSlot
from placerl.types import Role

ROOT = Path(__file__).resolve().parents[2]
GRPO_YAML = str(ROOT / "examples" / "grpo.yaml")
TOOLS = "env.tools=[placerl.tasks.tool_arithmetic:calc]"
SLOT = DeviceSlot("cpu", 0, 0, 2)
ROLES = (Role.ACTOR, Role.ROLLOUT, Role.REWARD)


def episodes(**kw) -> EpisodeShape:
    base = dict(
        turns=2.0, rounds=3, turn_tokens=8.0, round_tokens=12.0, observation_tokens=6.0, tool_s=0.0
    )
    return EpisodeShape(**{**base, **kw})


def work(e: EpisodeShape | None = None, **kw) -> Workload:
    shape = tiny_default()
    shapes = dict.fromkeys(ROLES, shape)
    base = dict(prompts=4, samples=4, prompt_len=16.0, response_len=12.0, episodes=e)
    return Workload("grpo", ROLES, shapes, **{**base, **kw})


def gen(w: Workload, rows: float = 16) -> float:
    return ep.generate_s(tiny_default(), CPU_DEFAULT, SLOT, w, rows)


def test_the_workload_reads_episodes_from_env_expect_or_their_bounds(tmp_path):
    bare = workload_from_config(auto_config(tmp_path))
    assert bare.episodes is None and bare.gen_rounds == 1
    cfg = auto_config(tmp_path, TOOLS, "env.max_turns=3", "env.max_tokens=200")
    e = workload_from_config(cfg).episodes
    assert (e.turns, e.rounds, e.turn_tokens, e.round_tokens) == (3, 3, 16, 16)  # the bounds
    assert (e.observation_tokens, e.tool_s) == (32, 0.0)
    set_ = [*("env.expect.turns=1.5", "env.expect.slowest_turns=2", "env.expect.tool_s=0.4")]
    set_ += ["env.expect.turn_tokens=5", "env.expect.slowest_turn_tokens=9"]
    w = workload_from_config(auto_config(tmp_path, TOOLS, "env.max_turns=3", *set_))
    assert w.episodes == EpisodeShape(1.5, 2, 5.0, 9.0, 32.0, 0.4)
    assert w.response_len == 2 * 9 + 32  # the slowest episode's width: turns and observation
    capped = workload_from_config(auto_config(tmp_path, TOOLS, "env.max_tokens=40"))
    assert capped.response_len == 40  # never wider than env.max_tokens


@pytest.mark.parametrize("seed", range(40))
def test_one_turn_without_observations_is_single_turn_sampling(seed):
    rng = random.Random(seed)
    rows, tokens, samples = rng.randint(1, 64), rng.randint(1, 64), rng.choice([1, 2, 4])
    e = episodes(turns=1.0, rounds=1, turn_tokens=tokens, round_tokens=tokens, tool_s=3.0)
    w = work(e, response_len=float(tokens), prompt_len=rng.uniform(1, 256), samples=samples)
    single = ct.generate_s(tiny_default(), CPU_DEFAULT, SLOT, w.with_(episodes=None), rows)
    assert gen(w, rows) == pytest.approx(single)  # and one round never waits on tools


@pytest.mark.parametrize("seed", range(40))
def test_every_round_but_the_last_waits_on_its_tools(seed):
    rng = random.Random(seed)
    rounds, tool_s, rows = rng.randint(1, 6), rng.uniform(0, 30), rng.randint(1, 64)
    e = episodes(turns=rng.uniform(1, rounds), rounds=rounds)
    waits = gen(work(dataclasses.replace(e, tool_s=tool_s)), rows) - gen(work(e), rows)
    assert waits == pytest.approx((rounds - 1) * tool_s)
    assert dataclasses.replace(e, tool_s=tool_s).tool_wait_s == pytest.approx(waits)


def test_observations_and_the_long_tail_cost_generation_time():
    base = work(episodes(turns=2.0, rounds=2))
    longer_obs = work(episodes(turns=2.0, rounds=2, observation_tokens=60.0))
    assert gen(longer_obs) > gen(base)
    # the same mean turns, but the slowest episode keeps the batch sampling two rounds longer
    tail = work(episodes(turns=2.0, rounds=4))
    assert gen(tail) > gen(base)
    # rows thin out: the tail's rounds sample fewer rows than the first
    rows = [ep.round_rows(tail.episodes, 16, i) for i in range(4)]
    assert rows[0] == 16 and sum(rows) == pytest.approx(16 * 2.0) and rows[1] < 16
    # a round decodes until its slowest turn: more steps cost more
    assert gen(work(episodes(round_tokens=24.0))) > gen(work(episodes()))


def test_separate_hides_tool_waits_that_flatten_serialises():
    cluster = CLUSTERS["cpu2"]()
    flat = strategies.flatten(ROLES, cluster, rule_reward=True)
    sep = strategies.separate(ROLES, cluster, rule_reward=True, max_staleness=1)
    short = dict(turn_tokens=2.0, round_tokens=2.0)  # a long update against short turns
    quick = work(episodes(**short), max_staleness=1, epochs=8, response_len=24.0)
    slow = quick.with_(episodes=episodes(**short, tool_s=0.5))
    m = CPU_DEFAULT

    def step(plan, w):
        return predict_step(plan, w, step_phases(plan, w, m)).step_s

    assert step(flat, slow) - step(flat, quick) == pytest.approx(2 * 0.5)
    hidden = predict_step(sep, quick, step_phases(sep, quick, m))
    assert hidden.cycles["rollout"] + 1.0 <= hidden.cycles["trainer"], "scenario: room to hide"
    assert step(sep, slow) == pytest.approx(step(sep, quick))


def test_dynamic_sampling_rounds_run_in_the_step_before_the_next_launch():
    plan = strategies.separate(ROLES, CLUSTERS["cpu4"](), rule_reward=True, max_staleness=1)
    w = work(None, max_staleness=1, gen_rounds=3)

    def ph(name, groups, seconds, role=Role.ACTOR):
        return Phase(name, role, tuple(groups), seconds)

    g, e, learn = 1.0, 0.25, 2.0
    phases = [
        ph("generate", ["gen"], 3 * g, Role.ROLLOUT),  # phases charge every round
        ph("score", ["train"], 3 * e, Role.REWARD),
        ph("update", ["train"], learn),
    ]
    pred = predict_step(plan, w, phases)
    # n·E + (n − 1)·G + max(G, L)
    assert pred.step_s == pytest.approx(3 * e + 2 * g + max(g, learn))
    one = predict_step(plan, w.with_(gen_rounds=1), [ph("generate", ["gen"], g, Role.ROLLOUT)])
    assert one.step_s == pytest.approx(g)


def test_dapo_generation_is_charged_its_rounds(tmp_path):
    from placerl.placement.auto.plan import run_search

    shapes = ["placement.max_staleness=0", "rollout.max_new_tokens=64"]
    grpo, _ = run_search(auto_config(tmp_path, *shapes), "8xH100", None, "7B")
    dapo_cfg = auto_config(tmp_path, "stage=dapo", "dapo.dynamic_sampling.max_rounds=3", *shapes)
    dapo, w = run_search(dapo_cfg, "8xH100", None, "7B")
    assert w.gen_rounds == 3
    by_name = {s.name: s for s in grpo.ranked if s.feasible}
    same = next(s for s in dapo.ranked if s.feasible and s.name in by_name)
    g, d = by_name[same.name].prediction.phases, same.prediction.phases
    assert d["generate"] == pytest.approx(3 * g["generate"])
    assert d["score"] == pytest.approx(3 * g["score"])
    assert same.step_s > by_name[same.name].step_s
    note = next(n for n in dapo.notes if n.startswith("dynamic sampling"))
    assert "up to 3 batches" in note and "charges the cap" in note
    assert not any(n.startswith("dynamic sampling") for n in grpo.notes)
    off = auto_config(tmp_path, "stage=dapo", "dapo.dynamic_sampling.enabled=false", *shapes)
    assert workload_from_config(off).gen_rounds == 1


@pytest.mark.parametrize(
    ("tool_s", "said"), [("0.3", "the pick is the same"), ("20", "that changes the pick")]
)
def test_plan_auto_says_whether_tools_change_the_pick(capsys, monkeypatch, tmp_path, tool_s, said):
    monkeypatch.setenv("PLACERL_PROFILE_DIR", str(tmp_path))  # no stored profile: defaults
    args = ["plan", GRPO_YAML, "placement.device=cpu", "placement.max_staleness=1", "--auto"]
    args += ["--no-profile", TOOLS, "env.max_turns=3", "env.expect.turns=2"]
    assert main([*args, f"env.expect.tool_s={tool_s}"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "tools: generation waits" in out and said in out
    if said == "that changes the pick":
        assert "Separate samples while the update runs" in out and "pick: separate" in out


def test_a_runs_env_metrics_give_the_episodes_measured_shape():
    bound = episodes(turns=3.0, rounds=3, turn_tokens=12.0, observation_tokens=32.0, tool_s=0.0)
    # two sleeping steps of 1 s and an instant answer per episode: a mean step of 2/3 s
    rows = [
        {"env/turns": 3.0, "env/tokens_model": 12.0, "env/tokens_observation": 28.0},
        {"env/turns": 2.5, "env/tokens_model": 10.0, "env/tokens_observation": 21.0},
    ]
    for r in rows:
        r["env/step_s"] = (r["env/turns"] - 1) / r["env/turns"]
    got = ep.observed_shape(bound, rows)
    assert got.turns == pytest.approx(2.75) and got.turn_tokens == pytest.approx(11 / 2.75)
    assert got.observation_tokens == pytest.approx(24.5 / 1.75)
    mean_step = (2 / 3 + 1.5 / 2.5) / 2
    assert got.tool_s == pytest.approx(mean_step * 2.75 / 1.75)
    assert (got.rounds, got.round_tokens) == (3, bound.round_tokens)  # no metric holds them
    assert ep.observed_shape(bound, [{"reward/mean": 1.0}]) == bound
    one_turn = ep.observed_shape(bound, [{"env/turns": 1.0, "env/tokens_model": 5.0}])
    assert (one_turn.turns, one_turn.tool_s, one_turn.observation_tokens) == (1.0, 0.0, 0.0)


def test_auto_refits_to_the_episodes_it_measured(tmp_path, monkeypatch):
    from placerl.placement.auto.plan import _DECISIONS, prepare_auto
    from placerl.placement.auto.replan import monitor_for

    monkeypatch.setenv("PLACERL_PROFILE_DIR", str(tmp_path / "none"))  # the defaults
    cfg = auto_config(tmp_path, TOOLS, "env.max_turns=3", "placement.replan_after=2")
    prepare_auto(cfg, False, lambda _: None)
    d = _DECISIONS[str(cfg.run_dir)]
    assert d.workload.episodes.turns == 3 and d.workload.episodes.tool_s == 0
    monitor = monitor_for(cfg)
    env = {"env/turns": 2.0, "env/tokens_model": 8.0, "env/tokens_observation": 6.0}
    for step in (1, 2):
        monitor.observe(step, {"time/step": 1.0, "time/generate": 0.5, **env, "env/step_s": 0.2})
    measured = d.workload.episodes
    assert measured.turns == 2.0 and measured.turn_tokens == 4.0
    assert measured.observation_tokens == 6.0 and measured.tool_s == pytest.approx(0.4)
    _DECISIONS.clear()


def test_strategy_auto_says_what_tools_and_dynamic_sampling_do_to_its_pick(tmp_path, monkeypatch):
    from placerl.placement.auto.plan import decide

    monkeypatch.setenv("PLACERL_PROFILE_DIR", str(tmp_path / "none"))  # the defaults
    cfg = auto_config(tmp_path, TOOLS, "env.expect.tool_s=0.5", "stage=dapo")
    _, lines = decide(cfg, CLUSTERS["cpu2"]())
    assert any(line.startswith("auto: tools: generation waits") for line in lines)
    assert any(line.startswith("auto: dynamic sampling: up to 3 batches") for line in lines)
