"""``placerl plan`` as a user meets it: grammar, only the algorithm's roles, a cluster too
small for the Plan, an unreachable Ray address (issue 12 item 7)."""

from __future__ import annotations

from pathlib import Path

from placement_helpers import CLUSTERS, GRPO, PPO

from placerl.cli import main
from placerl.placement.plan import strategies
from placerl.placement.plan.cluster import capacity_problem, cpu_cluster, plan_resources
from placerl.placement.plan.plan import DeviceSlot

ROOT = Path(__file__).resolve().parents[2]
GRPO_YAML = str(ROOT / "examples" / "grpo.yaml")


def test_one_slot_and_one_update_are_singular():
    plan = strategies.separate(GRPO, CLUSTERS["cpu2"](), rule_reward=True, max_staleness=1)
    text = "\n".join(plan.notes)
    assert "(1 slot, dp=1)" in text and "at most 1 update" in text
    assert "1 slots" not in text and "1 updates" not in text
    flat = strategies.flatten(GRPO, cpu_cluster(1, 1, cores=1), rule_reward=True)
    assert "of 1 slot:" in flat.notes[0]


def test_separate_notes_name_only_the_work_the_algorithm_has():
    grpo = "\n".join(strategies.separate(GRPO, CLUSTERS["cpu2"](), rule_reward=True).notes)
    assert "values" not in grpo and "reference" not in grpo
    ppo = "\n".join(strategies.separate(PPO, CLUSTERS["cpu4"](), rule_reward=False).notes)
    assert "values, reference log-probs and scores are computed there" in ppo


def test_capacity_problem_counts_cpu_threads_and_gpus():
    slots = cpu_cluster(4, 2, cores=8).slots
    assert plan_resources(slots) == {"CPU": 8.0}
    assert capacity_problem("flatten", slots, {"CPU": 8.0}, "this machine") is None
    msg = capacity_problem("flatten", slots, {"CPU": 2.0}, "this machine")
    assert "asks for 8 CPU (4 workers); this machine has 2 CPU" in msg
    gpus = [DeviceSlot("gpu", i, 0, 1) for i in range(4)]
    assert "has 2 GPU" in capacity_problem("separate", gpus, {"CPU": 64, "GPU": 2}, "this machine")


def test_plan_on_a_machine_too_small_says_so(capsys, monkeypatch):
    monkeypatch.setattr("placerl.placement.plan.config.available_cores", lambda: 2)
    args = ["plan", GRPO_YAML, "placement.strategy=flatten", "placement.device=cpu"]
    assert main([*args, "placement.num_workers=8"]) == 2
    captured = capsys.readouterr()
    assert "placement: flatten" in captured.out  # the plan is still shown
    assert "asks for 8 CPU (8 workers); this machine has 2 CPU" in captured.err
    assert main([*args, "placement.num_workers=2"]) == 0


def test_plan_with_an_unreachable_ray_address_fails_fast(capsys):
    args = ["plan", GRPO_YAML, "placement.strategy=flatten", "placement.ray_address=127.0.0.1:1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "placement.ray_address: cannot reach a Ray cluster at '127.0.0.1:1'" in err
