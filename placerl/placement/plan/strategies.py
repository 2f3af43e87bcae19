"""Placement strategies: pure functions ``(roles, cluster) -> Plan``.

- ``flatten``: one group with every slot; every role on it with dp = the group size. Nothing
  moves between devices (the rollout samples from the actor's own weights), everything
  time-shares every device.
- ``interleave`` (FlexRLHF's default, arXiv 2312.11819): the trained models (actor, critic)
  and the rollout on every slot; the two frozen models (reference, reward model) each on a
  disjoint half, so they score a batch at the same time and each keeps one copy per half
  instead of one per device. Groups stay disjoint: halves ``g0`` and ``g1``, and the roles on
  every slot name both (``group="g0", also_on=("g1",)``).
- ``separate``: the rollout on ``generation_slots`` slots (group ``gen``), the training side on
  the rest (group ``train``), so generation can overlap training when ``max_staleness > 0``.
- ``custom``: any partition of the slots into named groups and any role → group(s) mapping.

Roles. The set a stage needs comes from ``needed_roles`` in ``placerl.placement.from_config``.
A rule reward (a Python function, ``rule_reward=True``) holds no model but still runs in a
worker: every strategy places it with the rollout (same group(s), same dp), where the text is
produced, and never shards it; it takes no memory in validation.

Sharding (``none | full | hybrid``) applies to the model roles (actor, critic, reference,
reward model). The rollout is never sharded: it samples from a whole copy of the weights.
These functions do not validate; ``placerl.placement.plan.validate.validate_plan`` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from placerl.errors import UserError
from placerl.placement.plan.plan import Cluster, DeviceGroup, Plan, RolePlacement, Sharding
from placerl.types import Role

TRAINED = (Role.ACTOR, Role.CRITIC)
FROZEN = (Role.REFERENCE, Role.REWARD)


def ordered(roles: Iterable[Role]) -> tuple[Role, ...]:
    """The roles in Role-enum order, so plans and their printouts are deterministic."""
    wanted = set(roles)
    return tuple(r for r in Role if r in wanted)


def _names(roles: Iterable[Role]) -> str:
    return ", ".join(r.value for r in roles) or "nothing"


def plural(n: int, word: str) -> str:
    """``1 slot``, ``2 slots``: a count with its noun in the right number."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _between_phases(roles: Iterable[Role], rule_reward: bool) -> str:
    """What the training side computes between generation and update, for these roles only
    (GRPO without a KL term has no values and no reference log-probs to mention)."""
    roles = set(roles)
    work = [
        ("values", Role.CRITIC in roles),
        ("reference log-probs", Role.REFERENCE in roles),
        ("scores", Role.REWARD in roles and not rule_reward),
    ]
    named = [w for w, present in work if present]
    if not named:
        return ""
    listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
    return f"; {listed} are computed there, between generation and update"


def _place(
    role: Role,
    groups: Sequence[DeviceGroup],
    rule_reward: bool,
    sharding: Sharding | str,
    shard_size: int | None,
) -> RolePlacement:
    """The role on every slot of ``groups`` (dp = their size), sharded if it is a model."""
    dp = sum(g.size for g in groups)
    names = [g.name for g in groups]
    sharded = role != Role.ROLLOUT and not (role == Role.REWARD and rule_reward)
    mode = Sharding(sharding) if sharded else Sharding.NONE
    size = shard_size if mode == Sharding.HYBRID else None
    return RolePlacement(names[0], dp, mode, size, tuple(names[1:]))


def _common_notes(roles: tuple[Role, ...], rule_reward: bool) -> list[str]:
    notes = []
    if Role.REWARD in roles and rule_reward:
        notes.append(
            "reward is a rule function (no model): it runs with the rollout, on the workers "
            "that produced the text, and takes no device memory"
        )
    return notes


def flatten(
    roles: Iterable[Role],
    cluster: Cluster,
    *,
    rule_reward: bool = False,
    sharding: Sharding | str = Sharding.NONE,
    shard_size: int | None = None,
    max_staleness: int = 0,
) -> Plan:
    """Every role on one group of every slot, dp = the number of slots."""
    roles = ordered(roles)
    group = DeviceGroup("all", cluster.slots)
    placed = {r: _place(r, [group], rule_reward, sharding, shard_size) for r in roles}
    notes = [
        f"one group 'all' of {plural(group.size, 'slot')}: {_names(roles)} time-share every device, "
        f"each with dp={group.size}",
        "the rollout samples from the actor's own weights: no weight transfer",
    ]
    if max_staleness > 0:
        notes.append(
            f"max_staleness={max_staleness} gains little here: generation and training share "
            "every device, so they cannot overlap"
        )
    notes += _common_notes(roles, rule_reward)
    return Plan("flatten", (group,), placed, max_staleness, tuple(notes))


def _halves(cluster: Cluster) -> tuple[DeviceGroup, DeviceGroup]:
    """Slots cut in two in cluster order (node by node), the first half the larger."""
    cut = (cluster.size + 1) // 2
    return DeviceGroup("g0", cluster.slots[:cut]), DeviceGroup("g1", cluster.slots[cut:])


def interleave(
    roles: Iterable[Role],
    cluster: Cluster,
    *,
    rule_reward: bool = False,
    sharding: Sharding | str = Sharding.NONE,
    shard_size: int | None = None,
    max_staleness: int = 0,
) -> Plan:
    """Trained models and rollout on every slot; reference and reward model on disjoint
    halves. With fewer than two frozen models there is nothing to split: same as flatten."""
    roles = ordered(roles)
    frozen = [r for r in FROZEN if r in roles and not (r == Role.REWARD and rule_reward)]
    if len(frozen) < 2:
        plan = flatten(
            roles,
            cluster,
            rule_reward=rule_reward,
            sharding=sharding,
            shard_size=shard_size,
            max_staleness=max_staleness,
        )
        why = (
            f"interleave splits the reference and the reward model over disjoint halves; "
            f"here the frozen models are {_names(frozen)}, so nothing is split"
        )
        return Plan("interleave", plan.groups, plan.roles, max_staleness, (why, *plan.notes))
    if cluster.size < 2:
        raise UserError(
            "interleave puts the reference and the reward model on disjoint halves and needs "
            "at least 2 device slots, got 1; use strategy flatten or more workers",
            where="placement.strategy",
        )
    g0, g1 = _halves(cluster)
    placed = {}
    for role in roles:
        groups = {Role.REFERENCE: [g0], Role.REWARD: [g1]}.get(role, [g0, g1])
        placed[role] = _place(role, groups, rule_reward, sharding, shard_size)
    everywhere = [r for r in roles if r not in FROZEN]
    notes = [
        f"{_names(everywhere)} on all {plural(cluster.size, 'slot')} (g0+g1, dp={cluster.size}): the "
        "trained models use every device and the rollout samples from the actor's weights",
        f"reference on g0 ({plural(g0.size, 'slot')}) and reward model on g1 "
        f"({plural(g1.size, 'slot')}): they "
        "score a batch at the same time, one copy per half instead of one per device "
        "(FlexRLHF Interleave, arXiv 2312.11819)",
    ]
    return Plan("interleave", (g0, g1), placed, max_staleness, tuple(notes))


def separate(
    roles: Iterable[Role],
    cluster: Cluster,
    *,
    generation_slots: int | None = None,
    rule_reward: bool = False,
    sharding: Sharding | str = Sharding.NONE,
    shard_size: int | None = None,
    max_staleness: int = 0,
) -> Plan:
    """The rollout on its own slots (``gen``, default half), every other model on ``train``."""
    roles = ordered(roles)
    if Role.ROLLOUT not in roles:
        raise UserError(
            f"separate gives the rollout its own devices, but this stage samples nothing "
            f"(roles: {_names(roles)}); use strategy flatten",
            where="placement.strategy",
        )
    gen_size = cluster.size // 2 if generation_slots is None else generation_slots
    if not 1 <= gen_size <= cluster.size - 1:
        raise UserError(
            f"separate needs 1 to {cluster.size - 1} generation slots on a {cluster.size}-slot "
            f"cluster (the rest train), got {gen_size}",
            where="placement.generation_slots",
        )
    gen = DeviceGroup("gen", cluster.slots[:gen_size])
    train = DeviceGroup("train", cluster.slots[gen_size:])
    on_gen = {Role.ROLLOUT} | ({Role.REWARD} if rule_reward else set())
    placed = {
        r: _place(r, [gen if r in on_gen else train], rule_reward, sharding, shard_size)
        for r in roles
    }
    trainers = [r for r in roles if r not in on_gen]
    notes = [
        f"rollout on 'gen' ({plural(gen.size, 'slot')}, dp={gen.size}): a shadow copy of the actor's "
        "weights, synced after each update",
        f"{_names(trainers)} on 'train' ({plural(train.size, 'slot')}, dp={train.size})"
        + _between_phases(roles, rule_reward),
    ]
    if max_staleness == 0:
        notes.append(
            "max_staleness=0: generation waits for each update (on-policy); set "
            "placement.max_staleness>=1 to overlap generation with training"
        )
    else:
        notes.append(
            f"max_staleness={max_staleness}: 'gen' samples the next batch while 'train' "
            f"updates; samples lag the policy by at most {plural(max_staleness, 'update')}"
        )
    notes += _common_notes(roles, rule_reward)
    return Plan("separate", (gen, train), placed, max_staleness, tuple(notes))


GroupSpec = int | Sequence[int]  # a number of consecutive slots, or explicit slot indices


def build_groups(specs: Mapping[str, GroupSpec], cluster: Cluster) -> tuple[DeviceGroup, ...]:
    """Named groups from ``{name: count}`` (the next ``count`` slots in cluster order) or
    ``{name: [slot indices]}``. Overlaps are left for validation to name."""
    groups, cursor = [], 0
    for name, spec in specs.items():
        if isinstance(spec, int):
            indices = list(range(cursor, cursor + spec))
            cursor += spec
        else:
            indices = list(spec)
        bad = [i for i in indices if not 0 <= i < cluster.size]
        if bad or not indices:
            raise UserError(
                f"group '{name}' asks for slots {indices} but the cluster has {cluster.size} "
                f"slots (0..{cluster.size - 1})",
                where=f"placement.groups.{name}",
            )
        groups.append(DeviceGroup(name, tuple(cluster.slots[i] for i in indices)))
    return tuple(groups)


def _custom_role(role: Role, spec: Any, groups: tuple[DeviceGroup, ...]) -> RolePlacement:
    """A RolePlacement from a config mapping ``{group, dp_size, sharding, shard_size}``;
    ``group`` may list several groups and ``dp_size`` defaults to all their slots."""
    if isinstance(spec, RolePlacement):
        return spec
    names = [spec["group"]] if isinstance(spec["group"], str) else list(spec["group"])
    if not names:
        raise UserError("names no group", where=f"placement.roles.{role.value}.group")
    sizes = {g.name: g.size for g in groups}
    dp = spec.get("dp_size") or sum(sizes.get(n, 0) for n in names) or 1
    try:
        sharding = Sharding(spec.get("sharding") or "none")
    except ValueError:
        raise UserError(
            f"sharding must be none, full or hybrid, got {spec.get('sharding')!r}",
            where=f"placement.roles.{role.value}.sharding",
        ) from None
    return RolePlacement(names[0], dp, sharding, spec.get("shard_size"), tuple(names[1:]))


def custom(
    mapping: Mapping[Role, RolePlacement | Mapping[str, Any]],
    cluster: Cluster,
    *,
    groups: Mapping[str, GroupSpec] | None = None,
    max_staleness: int = 0,
) -> Plan:
    """Exactly the given groups and role placements (groups default to one 'all')."""
    built = build_groups(groups or {"all": cluster.size}, cluster)
    placed = {Role(r): _custom_role(Role(r), spec, built) for r, spec in mapping.items()}
    placed = {r: placed[r] for r in ordered(placed)}
    notes = [
        f"custom: group '{g.name}' ({plural(g.size, 'slot')}) hosts "
        f"{_names(r for r, p in placed.items() if g.name in p.groups)}"
        for g in built
    ]
    return Plan("custom", built, placed, max_staleness, tuple(notes))
