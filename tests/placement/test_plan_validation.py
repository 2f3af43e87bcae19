"""Every kind of plan that cannot be carried out is rejected with a message naming the culprit."""

from __future__ import annotations

import dataclasses

import pytest
from placement_helpers import GRPO, PPO, GiB, eight_gpus

from placerl.errors import UserError
from placerl.placement.plan.cluster import cpu_cluster
from placerl.placement.plan.plan import DeviceGroup, Plan, RolePlacement, Sharding
from placerl.placement.plan.strategies import custom, flatten, interleave
from placerl.placement.plan.validate import memory_per_slot, validate_plan
from placerl.types import Role

CPU4 = cpu_cluster(4, 1, cores=4)


def with_role(plan: Plan, role: Role, **changes) -> Plan:
    """``plan`` with one role's placement changed."""
    roles = dict(plan.roles)
    roles[role] = dataclasses.replace(roles[role], **changes)
    return dataclasses.replace(plan, roles=roles)


def rejected(plan: Plan, **kwargs) -> UserError:
    with pytest.raises(UserError) as err:
        validate_plan(plan, **kwargs)
    return err.value


def test_a_role_left_unplaced_is_named():
    plan = flatten(GRPO, CPU4)
    err = rejected(plan, needed=PPO)
    assert "role 'critic' is not placed" in str(err)
    assert "role 'reference' is not placed" in str(err)
    assert "2 problems" in str(err)


def test_a_role_the_stage_does_not_use_is_named():
    err = rejected(flatten(PPO, CPU4), needed=GRPO + (Role.REFERENCE,))
    assert err.where == "placement.roles.critic"
    assert "does not use it" in err.message


def test_a_group_that_does_not_exist_is_named():
    plan = with_role(flatten(PPO, CPU4), Role.REWARD, group="g7")
    err = rejected(plan)
    assert err.where == "placement.roles.reward.group"
    assert "'g7', which does not exist (groups: all)" in err.message


def test_a_spanned_group_that_does_not_exist_is_named():
    plan = with_role(interleave(PPO, CPU4), Role.ACTOR, also_on=("g1", "g2"))
    assert "'g2', which does not exist" in rejected(plan).message


def test_dp_larger_than_the_group_is_named():
    plan = with_role(interleave(PPO, CPU4), Role.REFERENCE, dp_size=3)
    err = rejected(plan)
    assert err.where == "placement.roles.reference.dp_size"
    assert "dp_size 3 but group g0 has 2 slots" in err.message


def test_dp_that_does_not_divide_the_group_is_named():
    plan = with_role(flatten(PPO, CPU4), Role.ACTOR, dp_size=3)
    err = rejected(plan)
    assert "role 'actor' has dp_size 3, which does not divide the 4 slots of group all" in str(err)


def test_dp_below_one_is_named():
    assert "dp_size >= 1" in rejected(with_role(flatten(PPO, CPU4), Role.CRITIC, dp_size=0)).message


def test_hybrid_shard_size_that_does_not_divide_dp_is_named():
    plan = with_role(flatten(PPO, CPU4), Role.CRITIC, sharding=Sharding.HYBRID, shard_size=3)
    err = rejected(plan)
    assert err.where == "placement.roles.critic.shard_size"
    assert "shard_size 3" in err.message and "dp_size 4" in err.message


def test_hybrid_without_shard_size_is_named():
    plan = with_role(flatten(PPO, CPU4), Role.ACTOR, sharding=Sharding.HYBRID)
    assert "hybrid with no shard_size" in rejected(plan).message


def test_shard_size_without_hybrid_is_named():
    plan = with_role(flatten(PPO, CPU4), Role.ACTOR, shard_size=2)
    assert "only read with sharding hybrid" in rejected(plan).message


def test_interleave_with_hybrid_shards_larger_than_a_half_is_rejected():
    plan = interleave(PPO, CPU4, sharding="hybrid", shard_size=4)
    err = rejected(plan)
    assert "placement.roles.reference.shard_size" in str(err)
    assert "placement.roles.reward.shard_size" in str(err)


def test_overlapping_groups_are_named():
    a = DeviceGroup("a", CPU4.slots[:3])
    b = DeviceGroup("b", CPU4.slots[2:])
    plan = Plan("custom", (a, b), {Role.ACTOR: RolePlacement("a", 3)})
    err = rejected(plan)
    assert err.where == "placement.groups.b"
    assert "slot n0:cpu2 is in groups 'a' and 'b'" in err.message


def test_overlapping_custom_groups_from_slot_lists_are_named():
    plan = custom({Role.ACTOR: {"group": "x"}}, CPU4, groups={"x": [0, 1], "y": [1, 2]})
    assert "slot n0:cpu1 is in groups 'x' and 'y'" in rejected(plan).message


def test_a_group_defined_twice_is_named():
    a = DeviceGroup("a", CPU4.slots[:2])
    plan = Plan("custom", (a, DeviceGroup("a", CPU4.slots[2:])), {})
    assert "group 'a' is defined twice" in rejected(plan).message


def test_slots_outside_the_cluster_are_named():
    plan = flatten(PPO, cpu_cluster(8, 1, cores=8))
    err = rejected(plan, cluster=CPU4)
    assert "uses slot n0:cpu4, not in the cluster" in str(err)


def test_negative_staleness_is_named():
    plan = dataclasses.replace(flatten(PPO, CPU4), max_staleness=-1)
    assert rejected(plan).where == "placement.max_staleness"


SEVEN_B = 7_000_000_000


def test_a_7b_actor_replicated_on_80gib_gpus_does_not_fit():
    cluster = eight_gpus()
    plan = flatten(GRPO, cluster)
    err = rejected(plan, model_params={Role.ACTOR: SEVEN_B, Role.ROLLOUT: SEVEN_B})
    assert "slot n0:gpu0 needs at least 104.3 GiB (actor 104.3 GiB)" in str(err)
    assert "has 80.0 GiB" in str(err)


def test_a_7b_actor_fully_sharded_over_8_gpus_fits():
    cluster = eight_gpus()
    plan = flatten(GRPO, cluster, sharding="full")
    params = {Role.ACTOR: SEVEN_B, Role.ROLLOUT: SEVEN_B}
    validate_plan(plan, needed=GRPO, cluster=cluster, model_params=params)
    usage = memory_per_slot(plan, params)[cluster.slots[0]]
    assert usage[Role.ACTOR] == SEVEN_B * 16 // 8
    assert usage[Role.ROLLOUT] == SEVEN_B * 4  # a sharded actor: the rollout needs whole weights


def test_an_unsharded_colocated_rollout_shares_the_actors_weights():
    params = {Role.ACTOR: 1000, Role.ROLLOUT: 1000, Role.REFERENCE: 1000}
    usage = memory_per_slot(flatten(PPO, CPU4), params)[CPU4.slots[0]]
    assert usage == {Role.ACTOR: 16_000, Role.REFERENCE: 4_000}


def test_memory_is_not_checked_where_slot_memory_is_unknown():
    validate_plan(flatten(PPO, CPU4), model_params={Role.ACTOR: 10**12})


def test_memory_error_names_the_slot_and_roles_over_budget():
    cluster = eight_gpus()
    plan = interleave(PPO, cluster)
    params = {role: 3_000_000_000 for role in PPO}
    err = rejected(plan, model_params=params)
    assert "reference 11.2 GiB" in str(err) and "slot n0:gpu0" in str(err)
    assert 80 * GiB == cluster.slots[0].memory_bytes
