"""Clusters from this machine or Ray's node list; Plans survive to_dict/from_dict and JSON."""

from __future__ import annotations

import json

import pytest
from placement_helpers import CLUSTERS, PPO, GiB, gpu_nodes

from placerl.errors import UserError
from placerl.placement.plan.cluster import (
    cluster_from_ray_nodes,
    cpu_cluster,
    detect_cluster,
    gpu_cluster,
)
from placerl.placement.plan.plan import Plan
from placerl.placement.plan.strategies import custom, flatten, interleave, separate
from placerl.types import Role


def test_cpu_cluster_shares_the_cores_between_workers():
    cluster = cpu_cluster(2, cores=16)
    assert [(s.kind, s.index, s.threads) for s in cluster.slots] == [("cpu", 0, 8), ("cpu", 1, 8)]


def test_cpu_cluster_defaults_to_two_workers_of_at_least_one_thread():
    cluster = cpu_cluster(cores=1)
    assert cluster.size == 2 and all(s.threads == 1 for s in cluster.slots)


def test_detect_cluster_on_cpu_honours_workers_and_threads():
    cluster = detect_cluster(num_workers=3, threads_per_worker=2, device="cpu")
    assert [s.label for s in cluster.slots] == ["n0:cpu0", "n0:cpu1", "n0:cpu2"]
    assert {s.threads for s in cluster.slots} == {2}


def test_detect_cluster_refuses_gpu_without_cuda(monkeypatch):
    monkeypatch.setattr("placerl.placement.plan.cluster.visible_gpu_memory", lambda: [])
    with pytest.raises(UserError, match="no CUDA device"):
        detect_cluster(device="gpu")


def test_detect_cluster_uses_every_visible_gpu(monkeypatch):
    monkeypatch.setattr(
        "placerl.placement.plan.cluster.visible_gpu_memory", lambda: [80 * GiB, 80 * GiB]
    )
    cluster = detect_cluster()
    assert [(s.label, s.memory_bytes) for s in cluster.slots] == [
        ("n0:gpu0", 80 * GiB),
        ("n0:gpu1", 80 * GiB),
    ]


def test_gpu_cluster_rejects_more_workers_than_gpus():
    with pytest.raises(UserError, match="3 GPU workers but 2 GPUs") as err:
        gpu_cluster([GiB, GiB], num_workers=3)
    assert err.value.where == "placement.num_workers"


def test_ray_nodes_with_gpus_give_one_slot_per_gpu_per_node():
    cluster = cluster_from_ray_nodes(gpu_nodes(2, 4), gpu_memory_bytes=80 * GiB)
    assert [s.label for s in cluster.slots] == [f"n{n}:gpu{i}" for n in (0, 1) for i in range(4)]
    assert {s.memory_bytes for s in cluster.slots} == {80 * GiB}


def test_ray_cpu_nodes_are_cut_into_worker_slots_and_dead_nodes_skipped():
    nodes = [
        {"Alive": True, "Resources": {"CPU": 8.0}},
        {"Alive": False, "Resources": {"CPU": 64.0}},
        {"CPU": 4.0},  # a bare resources dict, as in ray.cluster_resources()
    ]
    cluster = cluster_from_ray_nodes(nodes, num_workers=2)
    assert [(s.label, s.threads) for s in cluster.slots] == [
        ("n0:cpu0", 4),
        ("n0:cpu1", 4),
        ("n1:cpu0", 2),
        ("n1:cpu1", 2),
    ]


def test_a_ray_cluster_without_live_nodes_is_an_error():
    with pytest.raises(UserError, match="no live nodes"):
        cluster_from_ray_nodes([{"Alive": False, "Resources": {"CPU": 1.0}}])


def all_plans():
    for name, make in CLUSTERS.items():
        cluster = make()
        yield f"flatten-{name}", flatten(PPO, cluster, sharding="full")
        yield f"interleave-{name}", interleave(PPO, cluster)
        yield f"separate-{name}", separate(PPO, cluster, max_staleness=2)
    cluster = CLUSTERS["gpu8x2nodes"]()
    mapping = {
        Role.ACTOR: {"group": ["a", "b"], "sharding": "hybrid", "shard_size": 4},
        Role.ROLLOUT: {"group": "b"},
    }
    yield "custom", custom(mapping, cluster, groups={"a": 4, "b": 4})


PLANS = dict(all_plans())


@pytest.mark.parametrize("name", list(PLANS))
def test_plan_round_trips_through_a_dict_and_json(name):
    plan = PLANS[name]
    assert Plan.from_dict(plan.to_dict()) == plan
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_plan_dict_is_plain_data():
    raw = PLANS["interleave-cpu4"].to_dict()
    assert raw["roles"]["actor"] == {
        "group": "g0",
        "dp_size": 4,
        "sharding": "none",
        "shard_size": None,
        "also_on": ["g1"],
    }
    assert raw["groups"][1]["slots"][0]["index"] == 2


def test_a_plan_dict_written_before_also_on_existed_still_loads():
    raw = PLANS["flatten-cpu2"].to_dict()
    for placement in raw["roles"].values():
        del placement["also_on"]
    assert Plan.from_dict(raw) == PLANS["flatten-cpu2"]
