"""Per-device memory of a Plan: every term a named formula, in bytes.

Trained models (actor, critic) keep fp32 master weights (4 B/param), fp32 gradients (4) and
Adam's two fp32 moments (8): 16 B/param, divided by the shard factor (``none``: 1, ``full``:
dp, ``hybrid``: shard_size; ZeRO-3 / FSDP, Rajbhandari et al. 2020, arXiv 1910.02054). With
LoRA only the adapters carry gradients and moments; the base is frozen. Frozen models keep
their weights in the compute precision (4 or 2 B/param), sharded the same way.

Activations follow Korthikanti et al. 2022 (arXiv 2205.05198, Eq. 2): a block stores
``34·h`` bytes per token in 16-bit precision; the ``5·a·s/h`` attention-score term is dropped
because SDPA/flash attention does not store the scores. fp32 doubles it. With gradient
checkpointing a block keeps only its input (``2·h`` bytes per token in 16-bit) and one block's
full activations are live during its recompute. Logits: the LM head's fp32 ``tokens × V`` plus
their gradient (``2 × 4 × tokens × V``) in training, ``4 × tokens × V`` in forward-only passes.
The KV cache: ``2 · layers · kv_dim`` values per token of ``rows × (prompt + response)``.
A tensor-parallel engine (``gen_tp`` GPUs, Megatron-style) holds 1/tp of the weights.
Generation in ``gen_waves`` sequential waves holds the KV cache of one wave's rows (what
vLLM's scheduler does when the cache is short). ``offload`` moves the models of idle roles to host memory: only the largest role on a slot is
resident at a time. A fixed ``CONTEXT_BYTES`` (CUDA context and allocator slack) is added on GPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from math import ceil

from placerl.placement.plan import DeviceGroup, DeviceSlot, Plan, RolePlacement, Sharding
from placerl.placement.shapes import ModelShape
from placerl.placement.workload import Workload
from placerl.types import Role

GiB = 1024**3
CONTEXT_BYTES = 1.0 * GiB  # CUDA context + allocator fragmentation, measured ~0.6-1 GiB
TRAINED = (Role.ACTOR, Role.CRITIC)


def on_same_workers(plan: Plan, role: Role, other: Role) -> bool:
    """Every worker of ``role`` sits on a slot where ``other`` has one (fast paths for the
    strategies' plans: same groups and dp, or disjoint groups)."""
    a, b = plan.roles[role], plan.roles[other]
    if a.groups == b.groups and a.dp_size == b.dp_size:
        return True
    if not set(a.groups) & set(b.groups):
        return False
    slots = {id(s) for s in plan.worker_slots(other)}
    return all(id(s) in slots for s in plan.worker_slots(role))


def shard_factor(p: RolePlacement) -> int:
    """How many ways a role's state is split: dp under ``full``, shard_size under ``hybrid``."""
    if p.sharding == Sharding.FULL:
        return p.dp_size
    if p.sharding == Sharding.HYBRID:
        return p.shard_size or 1
    return 1


def lora_params(shape: ModelShape, rank: int) -> int:
    """Adapters on Q, K, V, O of every block: r·(in + out) each."""
    h, kv = shape.hidden, shape.kv_dim
    return shape.layers * rank * (2 * (h + h) + 2 * (h + kv))


def trained_state_bytes(shape: ModelShape, w: Workload, shards: int) -> dict[str, float]:
    """Weights, gradients and Adam moments of a trained model on one worker."""
    if w.lora_rank:
        adapters = lora_params(shape, w.lora_rank)
        return {
            "weights": (shape.params * w.dtype_bytes + adapters * 4) / shards,
            "gradients": adapters * 4 / shards,
            "optimizer": adapters * 8 / shards,
        }
    return {
        "weights": shape.params * 4 / shards,
        "gradients": shape.params * 4 / shards,
        "optimizer": shape.params * 8 / shards,
    }


def activation_bytes(shape: ModelShape, tokens: float, checkpointing: bool, dtype: int) -> float:
    """Stored activations of a forward+backward over ``tokens`` tokens (one micro-batch)."""
    scale = dtype / 2  # the 34·h figure is for 16-bit activations
    per_block = 34 * shape.hidden * tokens * scale
    if checkpointing:
        return shape.layers * 2 * shape.hidden * tokens * scale + per_block
    return shape.layers * per_block


def logits_bytes(shape: ModelShape, tokens: float, training: bool) -> float:
    """fp32 logits (and their gradient when training) of the LM head; a value head's are
    negligible."""
    if shape.scalar_head:
        return 0.0
    return (2 if training else 1) * 4.0 * tokens * shape.vocab


def kv_cache_bytes(shape: ModelShape, rows: int, context: float, dtype: int) -> float:
    return rows * context * shape.kv_bytes_per_token(dtype)


@dataclass(frozen=True)
class SlotMemory:
    slot: DeviceSlot
    terms: dict[str, float]  # "actor weights": bytes, ...

    @property
    def total(self) -> float:
        return sum(self.terms.values())


def _rows_per_worker(w: Workload, dp: int) -> int:
    return ceil(w.rows / max(1, dp))


def _micro_rows(w: Workload, dp: int, micro_batch: int | None) -> int:
    share = ceil(_rows_per_worker(w, dp) / max(1, w.minibatches))
    return min(share, micro_batch) if micro_batch else share


def role_terms(
    plan: Plan, role: Role, w: Workload, micro_batch: int | None, checkpointing: bool
) -> dict[str, float]:
    """The bytes one worker of ``role`` holds: its model state and its peak working set."""
    p = plan.roles[role]
    shape = w.shapes.get(role)
    if shape is None:  # a rule reward
        return {}
    shards = shard_factor(p)
    name = role.value
    context = w.prompt_len + w.response_len
    if role == Role.ROLLOUT:
        actor = plan.roles.get(Role.ACTOR)
        shares = actor is not None and on_same_workers(plan, Role.ROLLOUT, Role.ACTOR)
        rows = ceil(_rows_per_worker(w, p.dp_size) / max(1, w.gen_waves))
        terms = {f"{name} KV cache": kv_cache_bytes(shape, rows, context, w.dtype_bytes)}
        if not shares or actor.sharding != Sharding.NONE or plan.max_staleness > 0:
            # a whole copy to sample from, split over a tensor-parallel engine's GPUs (its KV
            # cache is split by heads too: per GPU, the same bytes as ``rows`` rows)
            terms[f"{name} weights"] = shape.params * w.dtype_bytes / max(1, w.gen_tp)
        return terms
    if role in TRAINED:
        terms = {f"{name} {k}": v for k, v in trained_state_bytes(shape, w, shards).items()}
        tokens = _micro_rows(w, p.dp_size, micro_batch) * context
        terms[f"{name} activations"] = activation_bytes(shape, tokens, checkpointing, w.dtype_bytes)
        terms[f"{name} logits"] = logits_bytes(shape, tokens, training=True)
        return terms
    tokens = _micro_rows(w, p.dp_size, micro_batch) * context
    return {
        f"{name} weights": shape.params * w.dtype_bytes / shards,
        f"{name} logits": logits_bytes(shape, tokens, training=False),
    }


def memory_per_slot(
    plan: Plan,
    w: Workload,
    micro_batch: int | None = None,
    checkpointing: bool | None = None,
) -> list[SlotMemory]:
    """Predicted peak bytes of every slot: the state of every role with a worker there plus
    the largest working set (activations, logits, KV cache are live one phase at a time).
    Slots hosting the same roles have the same terms: each such class is computed once."""
    return _memory(plan, w, micro_batch, checkpointing, distinct=False)


def memory_classes(
    plan: Plan, w: Workload, micro_batch: int | None = None, checkpointing: bool | None = None
) -> list[SlotMemory]:
    """``memory_per_slot`` with one entry (its first slot) per distinct set of terms."""
    return _memory(plan, w, micro_batch, checkpointing, distinct=True)


def _memory(plan, w, micro_batch, checkpointing, distinct: bool) -> list[SlotMemory]:
    micro_batch = micro_batch if micro_batch is not None else w.micro_batch
    checkpointing = w.checkpointing if checkpointing is None else checkpointing
    per_role = {r: role_terms(plan, r, w, micro_batch, checkpointing) for r in plan.roles}
    cache: dict[tuple, SlotMemory] = {}
    out = []
    for slot, roles in slot_roles(plan, distinct):
        key = (roles, slot.kind, slot.memory_bytes)
        if key in cache:
            if not distinct:
                out.append(SlotMemory(slot, cache[key].terms))
            continue
        cache[key] = SlotMemory(slot, _slot_terms(roles, per_role, w, slot.kind))
        out.append(cache[key])
    return out


_ALIKE: dict[int, tuple[DeviceGroup, bool]] = {}  # id -> (the group, kept alive; alike?)


def _alike(group: DeviceGroup) -> bool:
    """All slots of ``group`` have the first one's kind and memory (memoized: the search
    asks this of the same groups thousands of times)."""
    hit = _ALIKE.get(id(group))
    if hit is not None and hit[0] is group:
        return hit[1]
    first = group.slots[0]
    alike = all(s.kind == first.kind and s.memory_bytes == first.memory_bytes for s in group.slots)
    if len(_ALIKE) > 50_000:
        _ALIKE.clear()
    _ALIKE[id(group)] = (group, alike)
    return alike


def slot_roles(plan: Plan, distinct: bool = False) -> list[tuple[DeviceSlot, tuple[Role, ...]]]:
    """Each slot with the roles that have a worker on it. A group whose roles all use every
    slot (dp = its size, the usual case) is one class: no per-slot set lookups, and with
    ``distinct`` only its first slot when its slots are alike (same kind and memory)."""
    out = []
    for group in plan.groups:
        here = [r for r in Role if r in plan.roles and group.name in plan.roles[r].groups]
        sizes = {r: sum(plan.group(g).size for g in plan.roles[r].groups) for r in here}
        if all(plan.roles[r].dp_size == sizes[r] for r in here):
            roles = tuple(here)
            first = group.slots[0]
            alike = distinct and _alike(group)
            out += [(first, roles)] if alike else [(slot, roles) for slot in group.slots]
            continue
        on = {r: {id(s) for s in plan.worker_slots(r)} for r in here}
        out += [(s, tuple(r for r in here if id(s) in on[r])) for s in group.slots]
    return out


def _slot_terms(roles, per_role, w: Workload, kind: str) -> dict[str, float]:
    state: dict[str, float] = {}
    working: dict[Role, dict[str, float]] = {}
    for role in roles:
        for key, value in per_role[role].items():
            if key.endswith(("activations", "logits", "KV cache")):
                working.setdefault(role, {})[key] = value
            else:
                state[key] = value
    if w.offload and kind == "gpu":
        state = _resident_only(state, roles)
    peak = max(working.values(), key=lambda t: sum(t.values()), default={})
    terms = {**state, **peak}
    if kind == "gpu":
        terms["CUDA context"] = CONTEXT_BYTES
    return terms


def _resident_only(state: Mapping[str, float], roles: tuple[Role, ...]) -> dict[str, float]:
    """With offload, only the largest role's state is on the device at a time."""
    by_role = {r.value: {k: v for k, v in state.items() if k.startswith(r.value)} for r in roles}
    largest = max(by_role.values(), key=lambda t: sum(t.values()), default={})
    return dict(largest)


def memory_problem(
    plan: Plan, w: Workload, micro_batch=None, checkpointing=None, slots=None
) -> str | None:
    """The first slot that does not fit, naming its largest terms; None when all fit."""
    for mem in slots if slots is not None else memory_classes(plan, w, micro_batch, checkpointing):
        limit = mem.slot.memory_bytes
        if limit and mem.total > limit:
            top = sorted(mem.terms.items(), key=lambda kv: -kv[1])[:3]
            parts = ", ".join(f"{k} {v / GiB:.1f}" for k, v in top)
            return (
                f"{mem.slot.label} needs {mem.total / GiB:.1f} GiB > {limit / GiB:.1f} GiB "
                f"({parts} GiB)"
            )
    return None
