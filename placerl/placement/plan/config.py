"""What a run config asks of placement: the roles its stage needs, its cluster, its sizes.

The roles come from the stage (and from whether a reference or a reward model is used at all);
the cluster from ``placement.ray_address`` or this machine; the models' sizes from the headers
of their safetensors files when the directories exist (nothing is loaded). The Plan itself is
``placement.from_config.plan_from_config``'s (it may ask ``auto``, which sits above this).
"""

from __future__ import annotations

import json
import struct
from math import prod
from pathlib import Path

from placerl.config.schema import RunConfig
from placerl.placement.plan import strategies
from placerl.placement.plan.cluster import (
    available_cores,
    capacity_problem,
    cluster_from_ray,
    detect_cluster,
    local_slot,
    visible_gpu_memory,
)
from placerl.placement.plan.plan import Cluster, DeviceGroup, Plan, RolePlacement
from placerl.types import Role

SAMPLING_PREFERENCE = ("online_dpo", "rso", "brain")


def needed_roles(cfg: RunConfig) -> tuple[Role, ...]:
    """The roles a stage runs. Supervised stages train one model (the actor role, whatever its
    head); a reference is needed only with a KL term (ppo/grpo/rloo ``kl_coef > 0``)."""
    if cfg.stage in ("sft", "rm"):
        return (Role.ACTOR,)
    if cfg.stage == "dpo":
        return (Role.ACTOR, Role.REFERENCE)
    if cfg.stage in SAMPLING_PREFERENCE:
        return (Role.ACTOR, Role.ROLLOUT, Role.REWARD, Role.REFERENCE)
    kl_coef = cfg.ppo.kl_coef if cfg.stage == "ppo" else cfg.grpo.kl_coef
    roles = [Role.ACTOR, Role.ROLLOUT]
    if cfg.stage == "ppo":
        roles.append(Role.CRITIC)
    roles.append(Role.REWARD)
    if kl_coef > 0:
        roles.append(Role.REFERENCE)
    return strategies.ordered(roles)


def uses_rule_reward(cfg: RunConfig) -> bool:
    """A reward computed by a Python function (no model) when no reward model is given."""
    return cfg.reward.model is None


def worker_cluster(cfg: RunConfig) -> Cluster:
    """The slots workers may take: the Ray cluster at ``placement.ray_address``, else this
    machine's (``placement.num_workers`` × ``threads_per_worker``), whatever the strategy."""
    p = cfg.placement
    if p.ray_address:
        return cluster_from_ray(
            p.ray_address, num_workers=p.num_workers, threads_per_worker=p.threads_per_worker
        )
    return detect_cluster(p.num_workers, p.threads_per_worker, p.device)


def cluster_for(cfg: RunConfig) -> Cluster:
    """The run's cluster: this process's one device under ``strategy: local``, else the
    workers' (``worker_cluster``)."""
    p = cfg.placement
    if p.strategy == "local":
        return Cluster((local_slot(p.device, p.threads_per_worker),))
    return worker_cluster(cfg)


def count_params(model_dir: str | Path | None) -> int | None:
    """Parameters stored in a model directory's safetensors files (headers only), or None."""
    if model_dir is None:
        return None
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with open(file, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        total += sum(prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    return total


def model_params_for(cfg: RunConfig) -> dict[Role, int]:
    """Parameter counts of the roles whose model directories exist; others are left out."""
    policy = cfg.model.path or Path(cfg.run_dir) / "base_model"
    paths = {
        Role.ACTOR: policy,
        Role.ROLLOUT: policy,
        Role.REFERENCE: cfg.reference or policy,
        Role.CRITIC: cfg.critic or cfg.reward.model or policy,
        Role.REWARD: cfg.reward.model,
    }
    counts = {role: count_params(path) for role, path in paths.items()}
    return {role: n for role, n in counts.items() if n}


def local_plan(roles: tuple[Role, ...], cluster: Cluster, max_staleness: int) -> Plan:
    """Every role in this process on its one device: the local runtime."""
    group = DeviceGroup("local", cluster.slots[:1])
    notes = ["every role in this process, on one device: no workers"]
    if max_staleness:
        notes.append(
            f"max_staleness={max_staleness}: the rollout samples from a shadow copy of the "
            "actor up to that many updates behind (sampled in turn with training, in this process)"
        )
    else:
        notes.append("the rollout samples with the actor's own module (on-policy)")
    placed = {r: RolePlacement("local") for r in roles}
    return Plan("local", (group,), placed, max_staleness, tuple(notes))


def capacity_check(cfg: RunConfig, plan: Plan) -> str | None:
    """What ``placerl train`` would say when ``plan`` asks for more CPUs/GPUs than the Ray
    cluster at ``placement.ray_address`` (or this machine) has; None when it fits. The local
    strategy starts no workers and always fits."""
    if plan.strategy == "local":
        return None
    if cfg.placement.ray_address:
        import ray

        return capacity_problem(
            plan.strategy, plan.slots, ray.cluster_resources(), "the Ray cluster"
        )
    available = {"CPU": float(available_cores())}
    if any(s.kind == "gpu" for s in plan.slots):
        available["GPU"] = float(len(visible_gpu_memory()))
    return capacity_problem(plan.strategy, plan.slots, available, "this machine")
