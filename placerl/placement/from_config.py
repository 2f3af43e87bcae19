"""From a run config to a validated Plan: ``plan_from_config``.

What ``placerl plan`` prints and what a runtime carries out. The strategy comes from
``placement.strategy``: one of the pure strategies (``plan/strategies.py``), or ``auto``'s pick
(``auto/plan.py``, pinned for the run by ``prepare_auto``). This module sits above the
sub-packages because ``auto`` does: ``plan/`` never imports ``auto``.
"""

from __future__ import annotations

import dataclasses

from placerl.config.schema import RunConfig
from placerl.placement.auto.plan import auto_plan
from placerl.placement.plan import strategies
from placerl.placement.plan.config import (
    cluster_for,
    local_plan,
    model_params_for,
    needed_roles,
    uses_rule_reward,
)
from placerl.placement.plan.plan import Cluster, Plan
from placerl.placement.plan.validate import validate_plan
from placerl.types import Role


def make_plan(cfg: RunConfig, roles: tuple[Role, ...], cluster: Cluster) -> Plan:
    """Call the configured strategy (unvalidated)."""
    p = cfg.placement
    if p.strategy == "local":
        return local_plan(roles, cluster, p.max_staleness)
    if p.strategy == "auto":
        return auto_plan(cfg, cluster)
    if p.strategy == "custom":
        specs = {Role(r): spec.model_dump() for r, spec in p.roles.items()}
        return strategies.custom(
            specs, cluster, groups=p.groups or None, max_staleness=p.max_staleness
        )
    common = dict(
        rule_reward=uses_rule_reward(cfg),
        sharding=p.sharding,
        shard_size=p.shard_size,
        max_staleness=p.max_staleness,
    )
    if p.strategy == "separate":
        return strategies.separate(roles, cluster, generation_slots=p.generation_slots, **common)
    strategy = strategies.flatten if p.strategy == "flatten" else strategies.interleave
    return strategy(roles, cluster, **common)


def plan_from_config(
    cfg: RunConfig,
    cluster: Cluster | None = None,
    model_params: dict[Role, int] | None = None,
) -> Plan:
    """The validated Plan of ``cfg``; a UserError names whatever does not fit."""
    roles = needed_roles(cfg)
    cluster = cluster if cluster is not None else cluster_for(cfg)
    plan = make_plan(cfg, roles, cluster)
    if plan.strategy == "local":  # auto's pick of it too: this process's one device
        cluster = Cluster(plan.slots)
    if plan.offload != cfg.placement.offload:  # a copy only when needed: auto's monitor holds it
        plan = dataclasses.replace(plan, offload=cfg.placement.offload)
    params = model_params if model_params is not None else model_params_for(cfg)
    frozen_bytes = 2 if cfg.model.precision == "bf16" else 4  # frozen models load in it
    validate_plan(
        plan, needed=roles, cluster=cluster, model_params=params, frozen_bytes=frozen_bytes
    )
    return plan
