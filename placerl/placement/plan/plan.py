"""The Plan: where every role of an RLHF step lives. Plain, frozen, serializable data.

A Plan is what placement strategies (``flatten``, ``interleave``, ``separate``, ``custom``)
produce and what a runtime carries out; nothing else decides placement. It names

- device groups: disjoint lists of device slots (a GPU, or a CPU slot with a thread count);
- for each role, the group it lives on (or the groups, when it spans several: Interleave puts
  the actor on groups ``g0`` and ``g1`` while the reference has ``g0`` alone and the reward
  model ``g1``), its data-parallel size and its sharding:
  ``none`` (replicas, DDP), ``full`` (FSDP over the role's workers) or ``hybrid`` (shard
  inside sub-groups of ``shard_size`` workers, replicate across them: partial redundancy,
  PaRO / FSDP's HYBRID_SHARD);
- ``max_staleness``: how many policy updates a training sample may lag the policy that
  sampled it (0: synchronous on-policy training);
- ``offload``: whether GPU workers move the models of roles idle between phases to host memory.

Roles placed on the same group share worker processes (one per slot), time-sharing the
devices; roles on disjoint groups can run at the same time. Groups stay disjoint so that
"one worker process per slot" holds; a role that needs more devices than one group names
further groups in ``also_on`` rather than overlapping groups. A role with ``dp_size`` workers
over ``n`` slots puts rank ``r`` on slot ``r * n // dp_size`` (``dp_size`` divides ``n``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Literal

from placerl.types import Role

DeviceKind = Literal["cpu", "gpu"]


class Sharding(str, Enum):
    NONE = "none"  # every worker holds the whole model (DDP for trained roles)
    FULL = "full"  # parameters, gradients, optimizer state sharded over all the role's workers
    HYBRID = "hybrid"  # shard inside sub-groups of `shard_size` workers, replicate across them


@dataclass(frozen=True)
class DeviceSlot:
    """One device a worker process is pinned to: a GPU, or a share of CPU cores."""

    kind: DeviceKind = "cpu"
    index: int = 0  # GPU ordinal on its node, or CPU slot number
    node: int = 0
    threads: int = 1  # torch threads for a CPU slot (ignored on GPU)
    memory_bytes: int | None = None  # usable device memory when known

    @property
    def label(self) -> str:
        return f"n{self.node}:{self.kind}{self.index}"


@dataclass(frozen=True)
class Cluster:
    """What a placement may use: the device slots of every node."""

    slots: tuple[DeviceSlot, ...]

    @property
    def size(self) -> int:
        return len(self.slots)


@dataclass(frozen=True)
class DeviceGroup:
    name: str
    slots: tuple[DeviceSlot, ...]

    @property
    def size(self) -> int:
        return len(self.slots)


@dataclass(frozen=True)
class RolePlacement:
    group: str  # name of the DeviceGroup the role's workers live on
    dp_size: int = 1  # data-parallel workers (<= group size)
    sharding: Sharding = Sharding.NONE
    shard_size: int | None = None  # HYBRID only: workers per shard group (divides dp_size)
    also_on: tuple[str, ...] = ()  # further groups the role spans, after `group`

    @property
    def groups(self) -> tuple[str, ...]:
        """Every group the role's workers live on, ``group`` first."""
        return (self.group, *self.also_on)


@dataclass(frozen=True)
class Plan:
    strategy: str
    groups: tuple[DeviceGroup, ...]
    roles: dict[Role, RolePlacement]
    max_staleness: int = 0
    notes: tuple[str, ...] = field(default=())  # why the strategy chose what it chose
    offload: bool = False  # GPU workers: idle roles' models (and optimizer states) to host

    def group(self, name: str) -> DeviceGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def group_of(self, role: Role) -> DeviceGroup:
        """The role's group; for a role spanning several, their union named ``g0+g1``."""
        names = self.roles[role].groups
        if len(names) == 1:
            return self.group(names[0])
        slots = tuple(s for name in names for s in self.group(name).slots)
        return DeviceGroup("+".join(names), slots)

    @property
    def slots(self) -> tuple[DeviceSlot, ...]:
        """Every slot of the plan, group by group."""
        return tuple(s for g in self.groups for s in g.slots)

    def worker_slots(self, role: Role) -> tuple[DeviceSlot, ...]:
        """The slot of each of the role's dp ranks: rank r on slot r·n/dp of its n slots."""
        slots = self.group_of(role).slots
        stride = max(1, len(slots) // max(1, self.roles[role].dp_size))
        return slots[::stride][: self.roles[role].dp_size]

    def roles_on(self, slot: DeviceSlot) -> tuple[Role, ...]:
        """The roles with a worker on ``slot``, in Role order."""
        return tuple(r for r in Role if r in self.roles and slot in self.worker_slots(r))

    def colocated(self) -> dict[str, tuple[Role, ...]]:
        """Group name → the roles that share its worker processes, in Role order (a role
        spanning several groups is listed under each)."""
        out: dict[str, list[Role]] = {g.name: [] for g in self.groups}
        for role in Role:
            if role in self.roles:
                for name in self.roles[role].groups:
                    out[name].append(role)
        return {name: tuple(roles) for name, roles in out.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "groups": [asdict(g) for g in self.groups],
            "roles": {
                role.value: {**asdict(p), "sharding": p.sharding.value, "also_on": list(p.also_on)}
                for role, p in self.roles.items()
            },
            "max_staleness": self.max_staleness,
            "notes": list(self.notes),
            "offload": self.offload,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Plan:
        groups = tuple(
            DeviceGroup(g["name"], tuple(DeviceSlot(**s) for s in g["slots"]))
            for g in raw["groups"]
        )
        roles = {
            Role(name): RolePlacement(
                group=p["group"],
                dp_size=p.get("dp_size", 1),
                sharding=Sharding(p.get("sharding", "none")),
                shard_size=p.get("shard_size"),
                also_on=tuple(p.get("also_on", ())),
            )
            for name, p in raw["roles"].items()
        }
        return cls(
            strategy=raw["strategy"],
            groups=groups,
            roles=roles,
            max_staleness=int(raw.get("max_staleness", 0)),
            notes=tuple(raw.get("notes", ())),
            offload=bool(raw.get("offload", False)),
        )
