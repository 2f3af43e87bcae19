"""Check that a Plan can be carried out, and say exactly what does not fit.

Every problem names its culprit: the role, the group, the slot or the config key. All problems
are gathered and reported in one ``UserError``, so a user fixes a custom placement in one go.

Memory is a first-order estimate, checked only where both a slot's memory and the models'
parameter counts are known: per worker, a trained role (actor, critic) holds fp32 weights,
gradients and two Adam moments (16 bytes per parameter), a frozen model its bytes per parameter
in the training precision (4 for fp32, 2 for bf16: frozen models are loaded in it), divided by the shard factor (``full``: dp_size, ``hybrid``: shard_size). The rollout shares
the actor's weights where an unsharded actor sits on the same slot, and holds its own copy
otherwise. Activations, the KV cache and the CUDA context are not counted: the estimate is a
lower bound, so a plan it rejects cannot fit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from placerl.errors import UserError
from placerl.placement.plan.plan import Cluster, DeviceSlot, Plan, RolePlacement, Sharding
from placerl.placement.plan.strategies import plural
from placerl.types import Role

BYTES_FROZEN = 4  # fp32 weights; bf16 training loads frozen models in bf16 (2 bytes)
BYTES_TRAINED = 4 + 4 + 8  # weights, gradients, Adam's two moments
GiB = 1024**3

Problem = tuple[str, str]  # (where, message)


def validate_plan(
    plan: Plan,
    *,
    needed: Iterable[Role] | None = None,
    cluster: Cluster | None = None,
    model_params: Mapping[Role, int] | None = None,
    frozen_bytes: int = BYTES_FROZEN,
) -> None:
    """Raise one UserError listing every problem of ``plan``; return quietly if it fits.
    ``frozen_bytes``: bytes per parameter of a frozen model (its training precision)."""
    problems = _check_groups(plan, cluster) + _check_roles(plan, needed)
    names = {g.name for g in plan.groups}
    for role, placement in plan.roles.items():
        if set(placement.groups) <= names:
            problems += _check_parallelism(plan, role, placement)
    if plan.max_staleness < 0:
        problems.append(("placement.max_staleness", f"must be >= 0, got {plan.max_staleness}"))
    if not problems and model_params:
        problems += _check_memory(plan, model_params, frozen_bytes)
    if len(problems) == 1:
        where, message = problems[0]
        raise UserError(message, where=where)
    if problems:
        listing = "\n".join(f"  - {where}: {message}" for where, message in problems)
        raise UserError(
            f"the {plan.strategy} plan does not fit, {len(problems)} problems:\n{listing}",
            where="placement",
        )


def _check_groups(plan: Plan, cluster: Cluster | None) -> list[Problem]:
    problems: list[Problem] = []
    owner: dict[DeviceSlot, str] = {}
    seen: set[str] = set()
    for group in plan.groups:
        where = f"placement.groups.{group.name}"
        if group.name in seen:
            problems.append((where, f"group '{group.name}' is defined twice"))
        seen.add(group.name)
        if not group.slots:
            problems.append((where, f"group '{group.name}' has no device slots"))
        for slot in group.slots:
            if slot in owner and owner[slot] != group.name:
                problems.append(
                    (
                        where,
                        f"slot {slot.label} is in groups '{owner[slot]}' and '{group.name}'; "
                        "groups must be disjoint (a role on several groups names them all)",
                    )
                )
            owner.setdefault(slot, group.name)
            if cluster is not None and slot not in cluster.slots:
                problems.append(
                    (where, f"group '{group.name}' uses slot {slot.label}, not in the cluster")
                )
    return problems


def _check_roles(plan: Plan, needed: Iterable[Role] | None) -> list[Problem]:
    problems: list[Problem] = []
    names = [g.name for g in plan.groups]
    for role, placement in plan.roles.items():
        for group in placement.groups:
            if group not in names:
                problems.append(
                    (
                        f"placement.roles.{role.value}.group",
                        f"role '{role.value}' is placed on group '{group}', which does not "
                        f"exist (groups: {', '.join(names) or 'none'})",
                    )
                )
        if len(set(placement.groups)) < len(placement.groups):
            problems.append(
                (
                    f"placement.roles.{role.value}.group",
                    f"role '{role.value}' names a group twice: {list(placement.groups)}",
                )
            )
    if needed is not None:
        needed = set(needed)
        wanted = ", ".join(r.value for r in Role if r in needed)
        for role in Role:
            if role in needed and role not in plan.roles:
                problems.append(
                    (
                        f"placement.roles.{role.value}",
                        f"role '{role.value}' is not placed; this stage needs {wanted}",
                    )
                )
            if role in plan.roles and role not in needed:
                problems.append(
                    (
                        f"placement.roles.{role.value}",
                        f"role '{role.value}' is placed but this stage does not use it "
                        f"(it needs {wanted})",
                    )
                )
    return problems


def _check_parallelism(plan: Plan, role: Role, p: RolePlacement) -> list[Problem]:
    """dp fits and divides the role's slots; hybrid shards divide dp."""
    key = f"placement.roles.{role.value}"
    slots = plan.group_of(role).size
    on = "+".join(p.groups)
    if p.dp_size < 1:
        return [(f"{key}.dp_size", f"role '{role.value}' needs dp_size >= 1, got {p.dp_size}")]
    if p.dp_size > slots:
        return [
            (
                f"{key}.dp_size",
                f"role '{role.value}' has dp_size {p.dp_size} but group {on} has {plural(slots, 'slot')}",
            )
        ]
    if slots % p.dp_size:
        return [
            (
                f"{key}.dp_size",
                f"role '{role.value}' has dp_size {p.dp_size}, which does not divide the "
                f"{plural(slots, 'slot')} of group {on}",
            )
        ]
    if p.sharding != Sharding.HYBRID:
        if p.shard_size is not None:
            return [
                (
                    f"{key}.shard_size",
                    f"role '{role.value}' sets shard_size {p.shard_size} but sharding is "
                    f"{p.sharding.value}; shard_size is only read with sharding hybrid",
                )
            ]
        return []
    if p.shard_size is None or p.shard_size < 1 or p.dp_size % p.shard_size:
        got = "no shard_size" if p.shard_size is None else f"shard_size {p.shard_size}"
        return [
            (
                f"{key}.shard_size",
                f"role '{role.value}' has sharding hybrid with {got}; it needs a shard_size "
                f"that divides its dp_size {p.dp_size}",
            )
        ]
    return []


def _shard_factor(p: RolePlacement) -> int:
    if p.sharding == Sharding.FULL:
        return p.dp_size
    if p.sharding == Sharding.HYBRID:
        return p.shard_size or 1
    return 1


def memory_per_slot(
    plan: Plan, model_params: Mapping[Role, int], frozen_bytes: int = BYTES_FROZEN
) -> dict[DeviceSlot, dict]:
    """Estimated bytes each role holds on each slot (roles of unknown size are left out)."""
    usage: dict[DeviceSlot, dict[Role, int]] = {s: {} for s in plan.slots}
    actor = plan.roles.get(Role.ACTOR)
    actor_slots = set(plan.worker_slots(Role.ACTOR)) if actor else set()
    for role, p in plan.roles.items():
        params = model_params.get(role)
        if not params:
            continue
        per_param = BYTES_TRAINED if role in (Role.ACTOR, Role.CRITIC) else frozen_bytes
        for slot in plan.worker_slots(role):
            shared = role == Role.ROLLOUT and slot in actor_slots
            if shared and actor.sharding == Sharding.NONE:
                continue  # samples from the actor's own weights
            usage.setdefault(slot, {})[role] = params * per_param // _shard_factor(p)
    return usage


def human_bytes(n: float) -> str:
    """``1.5 GiB``, ``120 MiB``, ``3 KiB``: the memory estimate at a readable scale."""
    for unit, size in (("GiB", GiB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}" if unit == "GiB" else f"{n / size:.0f} {unit}"
    return f"{n:.0f} B"


def _check_memory(plan: Plan, model_params: Mapping[Role, int], frozen: int) -> list[Problem]:
    problems: list[Problem] = []
    for slot, roles in memory_per_slot(plan, model_params, frozen).items():
        total = sum(roles.values())
        if slot.memory_bytes is None or total <= slot.memory_bytes:
            continue
        parts = ", ".join(f"{r.value} {human_bytes(b)}" for r, b in roles.items())
        problems.append(
            (
                "placement",
                f"slot {slot.label} needs at least {human_bytes(total)} ({parts}) but has "
                f"{human_bytes(slot.memory_bytes)}; shard the large roles (placement.sharding: "
                "full) or give them other slots",
            )
        )
    return problems
