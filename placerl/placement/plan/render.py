"""Show a Plan to a person: a table of roles and a diagram of the roles on each device slot.

``placerl plan`` prints this; a run can print it at start-up. Nothing here decides anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.table import Table

from placerl.placement.plan.plan import DeviceSlot, Plan, RolePlacement, Sharding
from placerl.placement.plan.validate import GiB, human_bytes, memory_per_slot
from placerl.types import Role


def slot_span(slots: Sequence[DeviceSlot]) -> str:
    """Compact labels: consecutive slots of one node and kind as ``n0:gpu0-3``."""
    parts: list[str] = []
    run: list[DeviceSlot] = []
    for slot in [*slots, None]:
        if run and (
            slot is None
            or (slot.node, slot.kind) != (run[-1].node, run[-1].kind)
            or slot.index != run[-1].index + 1
        ):
            first, last = run[0], run[-1]
            parts.append(first.label + (f"-{last.index}" if last is not first else ""))
            run = []
        if slot is not None:
            run.append(slot)
    return " ".join(parts)


def sharding_label(p: RolePlacement) -> str:
    if p.sharding == Sharding.HYBRID:
        return f"hybrid({p.shard_size})"
    return p.sharding.value


def plan_table(plan: Plan) -> Table:
    """One row per role: its group(s), the devices of its workers, dp and sharding."""
    table = Table(title=f"placement: {plan.strategy}", title_justify="left")
    for name in ("role", "group", "devices", "dp", "sharding"):
        table.add_column(name, justify="right" if name == "dp" else "left")
    for role in Role:
        if role not in plan.roles:
            continue
        p = plan.roles[role]
        devices = slot_span(plan.worker_slots(role))
        table.add_row(role.value, "+".join(p.groups), devices, str(p.dp_size), sharding_label(p))
    return table


def _slot_label(slot: DeviceSlot) -> str:
    if slot.kind == "cpu":
        return f"{slot.label} ({slot.threads} thr)"
    if slot.memory_bytes:
        return f"{slot.label} ({slot.memory_bytes / GiB:.0f} GiB)"
    return slot.label


def slot_diagram(plan: Plan, model_params: Mapping[Role, int] | None = None) -> list[str]:
    """One line per slot: its group and the roles with a worker there, each role in its own
    column so that a role reads as a vertical band across the slots it spans."""
    roles = [r for r in Role if r in plan.roles]
    group_of = {s: g.name for g in plan.groups for s in g.slots}
    usage = memory_per_slot(plan, model_params) if model_params else {}
    labels = {s: _slot_label(s) for s in plan.slots}
    label_w = max(map(len, labels.values()), default=0)
    group_w = max((len(g.name) for g in plan.groups), default=0)
    lines = []
    for slot in plan.slots:
        here = set(plan.roles_on(slot))
        cells = [r.value if r in here else " " * len(r.value) for r in roles]
        line = f"{labels[slot]:<{label_w}} │ {group_of[slot]:<{group_w}} │ {'  '.join(cells)}"
        if usage.get(slot):
            line = f"{line}  ≥{human_bytes(sum(usage[slot].values()))}"
        lines.append(line.rstrip())
    return lines


def print_plan(
    plan: Plan,
    console: Console | None = None,
    model_params: Mapping[Role, int] | None = None,
) -> None:
    """The table, the per-slot diagram, the staleness bound and the strategy's notes."""
    console = console or Console()
    console.print(plan_table(plan))
    console.print()
    for line in slot_diagram(plan, model_params):
        console.print(line, markup=False, highlight=False)
    console.print()
    staleness = "on-policy" if plan.max_staleness == 0 else "samples may lag the policy"
    console.print(f"max_staleness: {plan.max_staleness} ({staleness})", highlight=False)
    for note in plan.notes:
        console.print(f"- {note}", markup=False, highlight=False)
