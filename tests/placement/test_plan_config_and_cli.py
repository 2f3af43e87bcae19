"""The ``placement:`` section, ``plan_from_config`` and ``placerl plan``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from placement_helpers import CLUSTERS, eight_gpus
from safetensors.numpy import save_file

from placerl.cli import main
from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.errors import UserError
from placerl.placement.from_config import plan_from_config
from placerl.placement.plan.config import count_params, needed_roles
from placerl.placement.plan.render import human_bytes, slot_diagram
from placerl.types import Role

ROOT = Path(__file__).resolve().parents[2]
PPO_YAML = str(ROOT / "examples" / "ppo.yaml")
A, R, C, W, F = Role.ACTOR, Role.ROLLOUT, Role.CRITIC, Role.REWARD, Role.REFERENCE


def config(*overrides: str) -> RunConfig:
    return load_config(None, list(overrides), RunConfig)


@pytest.mark.parametrize(
    ("overrides", "roles"),
    [
        (["stage=sft"], (A,)),
        (["stage=rm"], (A,)),
        (["stage=dpo"], (A, F)),
        (["stage=ppo"], (A, R, C, W, F)),
        (["stage=ppo", "ppo.kl_coef=0"], (A, R, C, W)),
        (["stage=grpo", "rollout.samples_per_prompt=2"], (A, R, W)),
        (["stage=rloo", "rollout.samples_per_prompt=2", "grpo.kl_coef=0.1"], (A, R, W, F)),
        (["stage=rso"], (A, R, W, F)),
    ],
)
def test_needed_roles_follow_the_stage(overrides, roles):
    assert needed_roles(config(*overrides)) == roles


def test_plan_from_config_uses_the_strategy_and_the_reward_model():
    cfg = config(
        "stage=ppo",
        "reward.model=rm_dir",
        "placement.strategy=interleave",
        "placement.max_staleness=1",
    )
    plan = plan_from_config(cfg, cluster=eight_gpus())
    assert plan.strategy == "interleave" and plan.max_staleness == 1
    assert plan.roles[W].groups == ("g1",) and plan.roles[A].groups == ("g0", "g1")


def test_plan_from_config_separate_with_generation_slots():
    cfg = config("stage=ppo", "placement.strategy=separate", "placement.generation_slots=3")
    plan = plan_from_config(cfg, cluster=CLUSTERS["cpu4"]())
    assert plan.group("gen").size == 3
    assert plan.colocated()["gen"] == (R, W)  # the rule reward goes with the rollout


def test_local_strategy_is_one_slot_in_process():
    plan = plan_from_config(config("stage=ppo", "placement.device=cpu"))
    assert plan.strategy == "local" and len(plan.slots) == 1
    assert all(p.dp_size == 1 for p in plan.roles.values())


def test_custom_placement_from_yaml(tmp_path):
    path = tmp_path / "custom.yaml"
    path.write_text(
        "stage: grpo\n"
        "rollout: {samples_per_prompt: 2}\n"
        "placement:\n"
        "  strategy: custom\n"
        "  groups: {train: 2, gen: [2, 3]}\n"
        "  roles:\n"
        "    actor: {group: train, sharding: full}\n"
        "    rollout: {group: gen}\n"
        "    reward: {group: [train, gen], dp_size: 2}\n"
    )
    plan = plan_from_config(load_config(path, [], RunConfig), cluster=CLUSTERS["cpu4"]())
    assert plan.roles[A].dp_size == 2 and plan.roles[A].sharding.value == "full"
    assert plan.roles[W].also_on == ("gen",) and plan.roles[W].dp_size == 2


def test_a_custom_role_may_name_just_its_group():
    """``roles: {reward: gen}`` is ``roles: {reward: {group: gen}}``: the PPO Separate variant
    whose frozen scorers live with the rollout."""
    cfg = config(
        "stage=grpo",
        "rollout.samples_per_prompt=2",
        "placement.strategy=custom",
        "placement.groups={gen: 1, train: 1}",
        "placement.roles={rollout: gen, reward: gen, actor: train}",
    )
    plan = plan_from_config(cfg, cluster=CLUSTERS["cpu2"]())
    assert plan.roles[W].group == "gen" and plan.roles[A].group == "train"


def test_custom_placement_missing_a_role_names_it():
    cfg = config(
        "stage=grpo",
        "rollout.samples_per_prompt=2",
        "placement.strategy=custom",
        "placement.roles={actor: {group: all}, rollout: {group: all}}",
    )
    with pytest.raises(UserError, match="role 'reward' is not placed"):
        plan_from_config(cfg, cluster=CLUSTERS["cpu2"]())


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["placement.strategy=custom"], "strategy custom needs placement.roles"),
        (["placement.roles={actor: {group: g}}"], "read only by strategy custom"),
        (["placement.sharding=hybrid"], "needs placement.shard_size"),
        (["placement.shard_size=2"], "read only with sharding hybrid"),
        (["placement.strategy=custom", "placement.roles={actr: {group: g}}"], "actr"),
        (["placement.num_workers=0"], "placement.num_workers"),
    ],
)
def test_placement_config_mistakes_name_the_key(overrides, expected):
    with pytest.raises(UserError, match=expected):
        config("stage=ppo", *overrides)


def test_count_params_reads_safetensors_headers(tmp_path):
    save_file(
        {"a": np.zeros((3, 4), np.float32), "b": np.zeros(5, np.float32)},
        tmp_path / "m.safetensors",
    )
    assert count_params(tmp_path) == 17
    assert count_params(tmp_path / "missing") is None and count_params(None) is None


def test_placerl_plan_prints_the_table_and_diagram(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("placerl.placement.plan.config.available_cores", lambda: 4)
    args = [
        "plan",
        PPO_YAML,
        "placement.strategy=interleave",
        "placement.device=cpu",
        "placement.num_workers=4",
        "reward.function=null",
        "reward.model=runs/rm/reward_model",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "placement: interleave" in out
    for header in ("role", "group", "devices", "dp", "sharding"):
        assert header in out
    assert "n0:cpu0 (" in out and "│ g0 │ actor  rollout  critic          reference" in out
    assert "max_staleness: 0" in out and "2312.11819" in out


@pytest.mark.parametrize("where", ["before", "after"])
def test_placerl_plan_json_is_a_plan(capsys, where):
    overrides = ["placement.strategy=separate", "placement.device=cpu"]
    args = (
        ["--json", PPO_YAML, *overrides] if where == "before" else [PPO_YAML, *overrides, "--json"]
    )
    assert main(["plan", *args]) == 0
    raw = json.loads(capsys.readouterr().out)
    assert raw["strategy"] == "separate" and raw["roles"]["rollout"]["group"] == "gen"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("placement.strategy=sideways", "placement.strategy"),
        ("placement.strategee=flatten", "did you mean 'strategy'"),
        ("placement.generation_slots=9", "placement.generation_slots"),
    ],
)
def test_placerl_plan_bad_placement_exits_2(capsys, override, expected):
    args = ["plan", PPO_YAML, override, "placement.device=cpu"]
    if "generation" in override:
        args.append("placement.strategy=separate")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_diagram_shows_each_slots_memory_estimate():
    plan = plan_from_config(
        config("stage=grpo", "rollout.samples_per_prompt=2", "placement.strategy=flatten"),
        cluster=CLUSTERS["cpu2"](),
        model_params={},
    )
    lines = slot_diagram(plan, {A: 1024, R: 1024})
    assert lines == [
        "n0:cpu0 (1 thr) │ all │ actor  rollout  reward  ≥16 KiB",
        "n0:cpu1 (1 thr) │ all │ actor  rollout  reward  ≥16 KiB",
    ]


def test_placerl_plan_reads_model_sizes_from_the_model_directory(capsys, tiny_model_dir):
    args = [
        "plan",
        PPO_YAML,
        f"model.path={tiny_model_dir}",
        "placement.strategy=flatten",
        "placement.device=cpu",
    ]
    assert main(args) == 0
    assert re.search(r"n0:cpu0 .*reference  ≥\d+ (KiB|MiB)\n", capsys.readouterr().out)


def test_human_bytes_picks_a_readable_unit():
    assert [human_bytes(n) for n in (10, 3 * 1024, 5 * 1024**2, 1.5 * 1024**3)] == [
        "10 B",
        "3 KiB",
        "5 MiB",
        "1.5 GiB",
    ]
