"""Per-device memory of a Plan: every term a named formula, in bytes.

Trained models (actor, critic) keep fp32 master weights (4 B/param), fp32 gradients (4) and
Adam's two fp32 moments (8): 16 B/param, divided by the shard factor (``none``: 1, ``full``:
dp, ``hybrid``: shard_size; ZeRO-3 / FSDP, Rajbhandari et al. 2020, arXiv 1910.02054). With
LoRA only the adapters carry gradients and moments; the base is frozen. Frozen models keep
their weights in the compute precision (4 or 2 B/param), sharded the same way.

Activations: a Llama block of Hugging Face transformers (SDPA attention, RMSNorm, SwiGLU
MLP) saves ``10·h + 4·f`` values per token for its backward, and the embedding output and
final norm ``2·h`` more. Measured with ``torch.autograd.graph.saved_tensors_hooks`` (distinct
storages, parameters left out) on fp32 Llamas of h = 128/256/512, f = 2h/4h, 1-3 layers, with
and without grouped K/V heads: 10.1-10.2·h + 4.0·f per block at every shape (K/V heads do
not change it: ``repeat_kv`` expands them before SDPA saves them). Korthikanti et al. 2022's
``34·h`` bytes at 16 bits (a GPT block with a 4h GELU MLP; arXiv 2205.05198) is 17·h values;
the SwiGLU MLP saves four ``f``-wide tensors (gate, up, SiLU(gate), their product) and the
norms and rotary embeddings their inputs too: 26·h at f = 4h, 1.5x Korthikanti. Values take
the activation dtype's bytes. With gradient checkpointing a block keeps only its input (``h``
values per token) and one block's full activations are live during its recompute. Rows that
share a prompt (GRPO/RLOO groups, ``models/shared_prefix.py``) run the prompt once: a group
costs ``prompt + samples·response`` tokens plus, per row, the prompt's gathered K/V
(``2·kv_dim`` values per prompt token and block; measured through ``ActorWorker.update`` with
the same hooks: 1.5 MiB where this gives 1.9, for 16 rows of 4 samples, 20 + 8 tokens).
Logits: the LM head runs in chunks (``models/logprobs.py``: at most ``chunk_tokens(V)``
tokens, 2**24 fp32 values, at a time, recomputed in backward): ``4 × min(tokens, chunk) × V``
for the chunk and as much again for its gradient in training, once in forward-only passes.
The KV cache: ``2 · layers · kv_dim`` values per token of ``rows × (prompt + response)``.
A rollout copy on workers of its own (Separate) receives the trainer's weights into one
bucket of ``staleness.sync_bucket_mb`` (``runtime/sync/transport.py``), live between samples.
A tensor-parallel engine (``gen_tp`` GPUs, Megatron-style) holds 1/tp of the weights.
Generation in ``gen_waves`` sequential waves holds the KV cache of one wave's rows (what
vLLM's scheduler does when the cache is short). ``offload`` moves the models of idle roles to
host memory: only the largest role on a slot is resident at a time. A fixed ``CONTEXT_BYTES``
(CUDA context and allocator slack) is added on GPU.

On a CPU slot the device memory is the process's resident set, and a process holds more than
its tensors (``cpu_process_terms``): the ``process baseline`` (libraries, code pages,
thread pools: ``Machine.process_bytes`` in one process, ``Machine.worker_bytes`` in a Ray
worker, measured by ``placerl profile``) and, at a checkpoint, the serialized copy of the
trained state (``checkpoint copy``), which replaces the step's working set as the peak, and
in a Ray worker the same state in Ray's object store (``object store copy``), which adds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from math import ceil

from placerl.placement.cost.machine import Machine
from placerl.placement.cost.shapes import ModelShape
from placerl.placement.cost.workload import Workload
from placerl.placement.plan.plan import DeviceGroup, DeviceSlot, Plan, RolePlacement, Sharding
from placerl.placement.plan.validate import human_bytes
from placerl.types import Role

GiB = 1024**3
CONTEXT_BYTES = 1.0 * GiB  # CUDA context + allocator fragmentation, measured ~0.6-1 GiB
TRAINED = (Role.ACTOR, Role.CRITIC)
WORKING = ("activations", "logits", "KV cache", "sync bucket")  # live one phase at a time


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


def block_values_per_token(shape: ModelShape) -> int:
    """Values one Llama block saves per token for its backward: ``10·h + 4·f`` (measured,
    module docstring)."""
    return 10 * shape.hidden + 4 * shape.intermediate


def activation_bytes(
    shape: ModelShape, tokens: float, checkpointing: bool, dtype: int, shared_kv: float = 0.0
) -> float:
    """Stored activations of a forward+backward over ``tokens`` tokens (one micro-batch);
    ``shared_kv``: prompt positions gathered to rows that share their prompt, each keeping
    the prompt's K and V (``2·kv_dim`` values) in every block."""
    per_block = (block_values_per_token(shape) * tokens + 2 * shape.kv_dim * shared_kv) * dtype
    outside = 2 * shape.hidden * tokens * dtype  # embedding output, final norm
    if checkpointing:
        return shape.layers * shape.hidden * tokens * dtype + per_block + outside
    return shape.layers * per_block + outside


def logits_bytes(shape: ModelShape, tokens: float, training: bool) -> float:
    """fp32 logits of one chunk of the LM head over ``tokens`` predicted tokens (and their
    gradient when training); a value head's are negligible."""
    from placerl.models.logprobs import chunk_tokens  # here: it imports torch

    if shape.scalar_head:
        return 0.0
    return (2 if training else 1) * 4.0 * min(tokens, chunk_tokens(shape.vocab)) * shape.vocab


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
            if plan.strategy != "local":  # a broadcast receives into one bucket at a time
                bucket = min(w.sync_bucket_mb * 2**20, terms[f"{name} weights"])
                if bucket > terms[f"{name} KV cache"]:  # live apart: the larger is the peak
                    terms = {f"{name} weights": terms[f"{name} weights"]}
                    terms[f"{name} sync bucket"] = bucket
        return terms
    if role in TRAINED or (role == Role.REFERENCE and w.reference == "train"):
        w = w.learning  # the update's rows: the pairs of online DPO and RSO
    rows = _micro_rows(w, p.dp_size, micro_batch)
    if role in TRAINED:
        terms = {f"{name} {k}": v for k, v in trained_state_bytes(shape, w, shards).items()}
        tokens, shared_kv = train_tokens(w, rows)
        terms[f"{name} activations"] = activation_bytes(
            shape, tokens, checkpointing, w.dtype_bytes, shared_kv
        )
        terms[f"{name} logits"] = logits_bytes(shape, rows * w.response_len, training=True)
        return terms
    return {
        f"{name} weights": shape.params * w.dtype_bytes / shards,
        f"{name} logits": logits_bytes(shape, rows * w.response_len, training=False),
    }


def train_tokens(w: Workload, rows: int) -> tuple[float, float]:
    """Tokens a training forward over ``rows`` rows runs, and the prompt positions it gathers
    to rows sharing a prompt: with several samples per prompt, each group's prompt runs once
    (``models/shared_prefix.py``), its K/V gathered to the group's rows."""
    if w.samples <= 1 or rows < 2:
        return rows * (w.prompt_len + w.response_len), 0.0
    groups = ceil(rows / w.samples)
    return groups * w.prompt_len + rows * w.response_len, rows * w.prompt_len


def memory_per_slot(
    plan: Plan,
    w: Workload,
    micro_batch: int | None = None,
    checkpointing: bool | None = None,
    machine: Machine | None = None,
) -> list[SlotMemory]:
    """Predicted peak bytes of every slot: the state of every role with a worker there plus
    the largest working set (activations, logits, KV cache are live one phase at a time).
    Slots hosting the same roles have the same terms: each such class is computed once.
    With ``machine``, CPU slots add its measured process baseline."""
    return _memory(plan, w, micro_batch, checkpointing, machine, distinct=False)


def memory_classes(
    plan: Plan,
    w: Workload,
    micro_batch: int | None = None,
    checkpointing: bool | None = None,
    machine: Machine | None = None,
) -> list[SlotMemory]:
    """``memory_per_slot`` with one entry (its first slot) per distinct set of terms."""
    return _memory(plan, w, micro_batch, checkpointing, machine, distinct=True)


def _memory(plan, w, micro_batch, checkpointing, machine, distinct: bool) -> list[SlotMemory]:
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
        terms = _slot_terms(roles, per_role, w, slot.kind)
        if slot.kind == "cpu":
            terms = cpu_process_terms(terms, roles, plan.strategy == "local", machine)
        cache[key] = SlotMemory(slot, terms)
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
            if key.endswith(WORKING):
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


def checkpoint_copy_bytes(terms: Mapping[str, float], roles, in_process: bool) -> float:
    """The heap copy a checkpoint makes of the trained state: in one process
    (``state_io.save_state``: safetensors copies every tensor to bytes before writing) all the
    trained roles' optimizer moments at once (the weights are written one model at a time,
    before); in a Ray worker, which returns each role's optimizer state from a remote call,
    the pickled bytes of the largest role's moments. Live after the step's working set is
    freed, it reuses that heap: the larger of the two is the peak."""
    moments = [terms.get(f"{r.value} optimizer", 0.0) for r in roles if r in TRAINED]
    return sum(moments) if in_process else max(moments, default=0.0)


def object_store_bytes(terms: Mapping[str, float], roles) -> float:
    """A Ray worker's share of a checkpoint in Ray's object store: every trained role's
    weights and optimizer state, written into shared memory that the worker keeps mapped,
    apart from its heap, so it adds to the heap's peak. (Measured here: returning 200 MiB of
    tensors from a Ray actor raised its peak RSS by 434 MiB: the object and its pickled copy.)"""
    kinds = ("weights", "optimizer")
    return sum(terms.get(f"{r.value} {k}", 0.0) for r in roles if r in TRAINED for k in kinds)


def cpu_process_terms(
    terms: dict[str, float], roles, in_process: bool, machine: Machine | None
) -> dict[str, float]:
    """A CPU slot's peak resident set: the ``checkpoint copy`` when it exceeds the step's
    working set (they are live at different times), a Ray worker's ``object store copy``, and
    the ``process baseline`` of the process that holds the slot (``Machine.process_bytes``,
    or ``worker_bytes`` for a Ray worker; measured by ``placerl profile``)."""
    working = {k: v for k, v in terms.items() if k.endswith(WORKING)}
    copy = checkpoint_copy_bytes(terms, roles, in_process)
    out = dict(terms)
    if copy > sum(working.values()):
        out = {k: v for k, v in terms.items() if k not in working} | {"checkpoint copy": copy}
    shared = 0.0 if in_process else object_store_bytes(terms, roles)
    if shared:
        out["object store copy"] = shared
    if machine is not None:
        out["process baseline"] = machine.process_bytes if in_process else machine.worker_bytes
    return out


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
            parts = ", ".join(f"{k} {human_bytes(v)}" for k, v in top)
            return (
                f"{mem.slot.label} needs {human_bytes(mem.total)} > {human_bytes(limit)} ({parts})"
            )
    return None
