"""Flatten, Interleave, Separate and custom placements on 2-, 4-, 8-slot CPU clusters and a
fake 2-node × 4-GPU cluster: every plan validates and places the roles where the strategy says."""

from __future__ import annotations

import pytest
from placement_helpers import CLUSTERS, GRPO, PPO

from placerl.errors import UserError
from placerl.placement.plan.cluster import cpu_cluster
from placerl.placement.plan.plan import RolePlacement, Sharding
from placerl.placement.plan.strategies import custom, flatten, interleave, separate
from placerl.placement.plan.validate import validate_plan
from placerl.types import Role

cluster_names = pytest.mark.parametrize("name", list(CLUSTERS))


def every_slot_once(plan) -> None:
    slots = [s for g in plan.groups for s in g.slots]
    assert len(slots) == len(set(slots)), "groups overlap"


@cluster_names
def test_flatten_puts_every_role_on_every_slot(name):
    cluster = CLUSTERS[name]()
    plan = flatten(PPO, cluster)
    validate_plan(plan, needed=PPO, cluster=cluster)
    assert [g.name for g in plan.groups] == ["all"]
    assert plan.groups[0].slots == cluster.slots
    assert {r: p.dp_size for r, p in plan.roles.items()} == {r: cluster.size for r in PPO}
    assert all(set(plan.roles_on(s)) == set(PPO) for s in cluster.slots)
    assert plan.notes


@cluster_names
def test_interleave_splits_reference_and_reward_model_over_disjoint_halves(name):
    cluster = CLUSTERS[name]()
    plan = interleave(PPO, cluster)
    validate_plan(plan, needed=PPO, cluster=cluster)
    every_slot_once(plan)
    g0, g1 = plan.group("g0"), plan.group("g1")
    assert g0.size + g1.size == cluster.size and min(g0.size, g1.size) >= 1
    for role in (Role.ACTOR, Role.CRITIC, Role.ROLLOUT):
        assert plan.roles[role].groups == ("g0", "g1")
        assert plan.roles[role].dp_size == cluster.size
        assert plan.group_of(role).slots == cluster.slots
    assert plan.roles[Role.REFERENCE].groups == ("g0",)
    assert plan.roles[Role.REWARD].groups == ("g1",)
    assert plan.roles[Role.REFERENCE].dp_size == g0.size
    first, last = cluster.slots[0], cluster.slots[-1]
    assert Role.REFERENCE in plan.roles_on(first) and Role.REWARD not in plan.roles_on(first)
    assert Role.REWARD in plan.roles_on(last) and Role.REFERENCE not in plan.roles_on(last)
    assert plan.colocated()["g1"] == (Role.ACTOR, Role.ROLLOUT, Role.CRITIC, Role.REWARD)
    assert any("2312.11819" in note for note in plan.notes)


def test_interleave_on_two_nodes_gives_each_frozen_model_one_node():
    cluster = CLUSTERS["gpu8x2nodes"]()
    plan = interleave(PPO, cluster)
    assert {s.node for s in plan.group_of(Role.REFERENCE).slots} == {0}
    assert {s.node for s in plan.group_of(Role.REWARD).slots} == {1}


def test_interleave_with_a_rule_reward_has_nothing_to_split():
    cluster = CLUSTERS["cpu4"]()
    plan = interleave(PPO, cluster, rule_reward=True)
    validate_plan(plan, needed=PPO, cluster=cluster)
    assert plan.strategy == "interleave"
    assert [g.name for g in plan.groups] == ["all"]
    assert "nothing is split" in plan.notes[0]
    assert plan.roles[Role.REWARD].sharding == Sharding.NONE


def test_interleave_needs_two_slots_to_split():
    with pytest.raises(UserError, match="at least 2 device slots"):
        interleave(PPO, cpu_cluster(1))


@cluster_names
def test_separate_gives_the_rollout_half_the_slots_by_default(name):
    cluster = CLUSTERS[name]()
    plan = separate(PPO, cluster, max_staleness=1)
    validate_plan(plan, needed=PPO, cluster=cluster)
    every_slot_once(plan)
    gen, train = plan.group("gen"), plan.group("train")
    assert gen.size == cluster.size // 2 and train.size == cluster.size - gen.size
    assert plan.colocated() == {
        "gen": (Role.ROLLOUT,),
        "train": (Role.ACTOR, Role.CRITIC, Role.REWARD, Role.REFERENCE),
    }
    assert plan.max_staleness == 1
    assert any("max_staleness=1" in note for note in plan.notes)


def test_separate_runs_a_rule_reward_with_the_rollout():
    cluster = CLUSTERS["cpu8"]()
    plan = separate(GRPO, cluster, generation_slots=6, rule_reward=True)
    validate_plan(plan, needed=GRPO, cluster=cluster)
    assert plan.group("gen").size == 6
    assert plan.colocated() == {"gen": (Role.ROLLOUT, Role.REWARD), "train": (Role.ACTOR,)}
    assert any("on-policy" in note for note in plan.notes)


@pytest.mark.parametrize("slots", [0, 2])
def test_separate_rejects_generation_slots_that_leave_a_side_empty(slots):
    with pytest.raises(UserError) as err:
        separate(PPO, CLUSTERS["cpu2"](), generation_slots=slots)
    assert err.value.where == "placement.generation_slots"


def test_separate_needs_a_rollout():
    with pytest.raises(UserError, match="samples nothing"):
        separate((Role.ACTOR,), CLUSTERS["cpu2"]())


@cluster_names
def test_sharding_applies_to_models_never_to_the_rollout(name):
    cluster = CLUSTERS[name]()
    plan = flatten(PPO, cluster, sharding="hybrid", shard_size=2)
    validate_plan(plan, needed=PPO, cluster=cluster)
    assert plan.roles[Role.ROLLOUT].sharding == Sharding.NONE
    assert plan.roles[Role.ROLLOUT].shard_size is None
    for role in (Role.ACTOR, Role.CRITIC, Role.REFERENCE, Role.REWARD):
        assert plan.roles[role].sharding == Sharding.HYBRID
        assert plan.roles[role].shard_size == 2


def test_custom_places_roles_on_named_groups():
    cluster = CLUSTERS["gpu8x2nodes"]()
    mapping = {
        Role.ACTOR: {"group": ["train", "gen"], "sharding": "full"},
        Role.ROLLOUT: {"group": "gen", "dp_size": 2},
        Role.REWARD: {"group": "train", "dp_size": 6, "sharding": "hybrid", "shard_size": 3},
    }
    plan = custom(mapping, cluster, groups={"train": 6, "gen": [6, 7]})
    validate_plan(plan, needed=GRPO, cluster=cluster)
    assert plan.roles[Role.ACTOR] == RolePlacement("train", 8, Sharding.FULL, None, ("gen",))
    assert plan.group("gen").slots == cluster.slots[6:]
    assert plan.worker_slots(Role.ROLLOUT) == cluster.slots[6:]
    assert plan.notes[1] == "custom: group 'gen' (2 slots) hosts actor, rollout"


def test_custom_dp_smaller_than_the_group_spreads_the_workers():
    cluster = CLUSTERS["cpu8"]()
    plan = custom({Role.ACTOR: RolePlacement("all", dp_size=2)}, cluster)
    assert plan.worker_slots(Role.ACTOR) == (cluster.slots[0], cluster.slots[4])


def test_custom_group_beyond_the_cluster_names_the_group():
    with pytest.raises(UserError, match="group 'big'") as err:
        custom({Role.ACTOR: {"group": "big"}}, CLUSTERS["cpu2"](), groups={"big": 3})
    assert err.value.where == "placement.groups.big"
