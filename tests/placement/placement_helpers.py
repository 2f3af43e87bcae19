"""Clusters and role sets shared by the placement tests."""

from __future__ import annotations

from placerl.placement.plan.cluster import cluster_from_ray_nodes, cpu_cluster
from placerl.placement.plan.plan import Cluster
from placerl.types import Role

GiB = 1024**3
PPO = (Role.ACTOR, Role.ROLLOUT, Role.CRITIC, Role.REWARD, Role.REFERENCE)
GRPO = (Role.ACTOR, Role.ROLLOUT, Role.REWARD)


def gpu_nodes(nodes: int = 2, per_node: int = 4) -> list[dict]:
    """What ``ray.nodes()`` reports for ``nodes`` machines of ``per_node`` GPUs each."""
    return [
        {
            "NodeID": f"node{n}",
            "Alive": True,
            "Resources": {"CPU": 32.0, "GPU": float(per_node), f"node:10.0.0.{n}": 1.0},
        }
        for n in range(nodes)
    ]


def eight_gpus() -> Cluster:
    """A fake 2-node × 4-GPU cluster with 80 GiB per GPU."""
    return cluster_from_ray_nodes(gpu_nodes(), gpu_memory_bytes=80 * GiB)


CLUSTERS = {
    "cpu2": lambda: cpu_cluster(2, 1, cores=2),
    "cpu4": lambda: cpu_cluster(4, 2, cores=8),
    "cpu8": lambda: cpu_cluster(8, 1, cores=8),
    "gpu8x2nodes": eight_gpus,
}


def auto_config(tmp_path, *overrides):
    """A short GRPO run config under ``placement.strategy: auto`` in ``tmp_path/run``."""
    from placerl.config import load_config
    from placerl.config.schema import RunConfig

    base = [
        "stage=grpo",
        "rollout.samples_per_prompt=4",
        "placement.strategy=auto",
        f"run_dir={tmp_path / 'run'}",
        "rollout.max_new_tokens=16",
    ]
    return load_config(None, [*base, *overrides], RunConfig)


QUIET = {  # the probe's conditions of a quiet 2-core VM (any fixed values will do)
    "threads": 2,
    "load_avg": 0.1,
    "matmul_1": 60.0,
    "matmul_all": 110.0,
    "copy_gbps": 8.0,
    "dispatch_us": 2.0,
}


def store_profile_of(machine, shape, device: str = "cpu", conditions=None):
    """A profile of ``shape`` with ``machine``'s constants where the store finds it (nothing
    measured): what ``placerl profile`` would write."""
    import json
    from dataclasses import asdict

    from placerl.placement.cost.profiles import default_path, profile_key

    path = default_path(device, shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = {
        "key": profile_key(device, shape),
        "created": "test",
        "seconds": 0.0,
        "conditions": conditions or QUIET,
        "machine": asdict(machine),
    }
    path.write_text(json.dumps(raw))
    return path


def quiet_probe(monkeypatch, conditions=None):
    """The one-second probe of the machine answers ``conditions`` (``QUIET``): a stored
    profile's conditions then hold or not by the test's say, not by this machine's load."""
    from placerl.placement.cost import calibration
    from placerl.placement.cost import conditions as cond

    now = cond.Conditions.from_dict(conditions or QUIET)
    monkeypatch.setattr(cond, "probe", lambda threads, rounds=9: now)
    monkeypatch.setattr(calibration, "_threads", lambda: now.threads)
    cond._CACHE.clear()
    return now
