"""Weight sync: the trainer's weights onto the rollout copies of a model (Separate placement).

Under Separate the rollout samples with a *shadow copy* of the actor on its own devices, so
after each update (or every ``sync_every``) the trainer's weights must reach it:

- ``broadcast_weights``: from one source rank to every other rank of a dedicated
  ``torch.distributed`` group (gloo on CPU, NCCL on GPU), in buckets of about ``bucket_mb``.
  The source first broadcasts the layout (names, shapes, dtypes), so a receiver whose model
  does not match fails with a message naming the first mismatch instead of silently loading
  garbage. Tensors are flattened, per dtype, into one contiguous stream that is cut into
  buckets; a tensor larger than a bucket is split across buckets, so peak extra memory is one
  bucket whatever the model (veRL and OpenRLHF bucket the same way; they keep whole tensors).
  Receivers copy each piece in place with ``copy_``, which casts: a bf16 rollout copy of an
  fp32 trainer works.
- ``copy_weights``: the in-process variant for the local runtime (shadow module, same process).
- ``checksum``: an exact, deterministic digest (SHA-256 of names, dtypes, shapes and bytes), so
  tests and debug runs can verify that every copy holds the trainer's weights bit for bit.
- ``SyncSchedule``: when a sync is due (every n updates).
- For worker processes (Ray runtime, Separate): ``separate_sync_ranks`` (who takes part, from
  the Plan alone, so every process agrees without talking), ``sync_on_host`` (what each
  worker does) and ``RemoteRolloutSync`` (the controller's side, which the pipeline drives).

What is synced: a module's state dict (persistent buffers included), a tied weight once.
Receivers match tensors by name, so a source that is a gathered state dict (FSDP) fits too.
For a LoRA model only the adapters (and trained heads) travel (``models.lora.sync_view``): the
rollout copy is the same LoRA model, whose frozen base already equals the trainer's, so it
computes exactly what the trainer's model computes. ``sync/bytes`` records what moved.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from placerl.models.lora import adapter_tensors, is_lora, sync_view
from placerl.placement.plan.plan import Plan, Sharding
from placerl.types import Role

DEFAULT_BUCKET_MB = 64.0

Weights = nn.Module | Mapping[str, Tensor]


def named_tensors(weights: Weights) -> list[tuple[str, Tensor]]:
    """What a sync moves: a module's state-dict entries, a tensor shared under several names
    (tied weights) once, under its first name; or a mapping's items as given."""
    if not isinstance(weights, nn.Module):
        return list(weights.items())
    seen: set[int] = set()
    out = []
    for name, tensor in weights.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            out.append((name, tensor))
    return out


def _by_name(weights: Weights) -> dict[str, Tensor]:
    """Every name a receiver answers to (tied weights under each of their names)."""
    if isinstance(weights, nn.Module):
        return dict(weights.state_dict(keep_vars=True).items())
    return dict(weights.items())


def _targets(layout: Sequence[tuple], weights: Weights) -> list[Tensor]:
    """The receiver's tensor for each (name, shape, …) the source sends, by name.

    Names, not positions, so a source that sends a tied weight once (a module) or under each
    name (a gathered state dict) fits the same receiver; every receiver tensor must be written.
    """
    mine = _by_name(weights)
    out = []
    for name, shape, *_ in layout:
        tensor = mine.get(name)
        if tensor is None or tuple(tensor.shape) != tuple(shape):
            have = "nothing" if tensor is None else list(tensor.shape)
            raise ValueError(
                f"weight sync: the source sends {name} {list(shape)}; this model has {have}"
            )
        out.append(tensor)
    written = {id(t) for t in out}
    missed = [name for name, t in mine.items() if id(t) not in written]
    if missed:
        raise ValueError(f"weight sync: the source sends nothing for {missed[:3]}")
    return out


@dataclass(frozen=True)
class SyncStats:
    tensors: int
    bytes: int
    buckets: int
    seconds: float

    def metrics(self, prefix: str = "sync") -> dict[str, float]:
        """Sizes only: the caller times the sync as a phase (``time/sync``)."""
        return {
            f"{prefix}/mb": self.bytes / 2**20,
            f"{prefix}/bytes": float(self.bytes),
            f"{prefix}/buckets": float(self.buckets),
        }


# ------------------------------------------------------------------------------ buckets


@dataclass(frozen=True)
class Piece:
    """Elements [start, stop) of tensor ``index`` (flattened), at ``offset`` in its bucket."""

    index: int
    start: int
    stop: int
    offset: int


@dataclass(frozen=True)
class Bucket:
    dtype: torch.dtype
    numel: int
    pieces: tuple[Piece, ...]


def plan_buckets(specs: Sequence[tuple[torch.dtype, int]], bucket_bytes: int) -> list[Bucket]:
    """Cut the tensors described by ``(dtype, numel)`` into buckets of at most ``bucket_bytes``.

    Tensors are grouped by dtype (first-seen order) and laid end to end; each bucket takes the
    next ``bucket_bytes // itemsize`` elements (at least one), so a tensor may span buckets and
    a bucket may hold many tensors. Every element of every tensor lands in exactly one piece.
    """
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes={bucket_bytes}: expected a positive number of bytes")
    by_dtype: dict[torch.dtype, list[int]] = {}
    for index, (dtype, _) in enumerate(specs):
        by_dtype.setdefault(dtype, []).append(index)
    buckets: list[Bucket] = []
    for dtype, indices in by_dtype.items():
        capacity = max(1, bucket_bytes // _itemsize(dtype))
        pieces: list[Piece] = []
        filled = 0
        for index in indices:
            numel, start = specs[index][1], 0
            while start < numel:
                take = min(numel - start, capacity - filled)
                pieces.append(Piece(index, start, start + take, filled))
                start, filled = start + take, filled + take
                if filled == capacity:
                    buckets.append(Bucket(dtype, filled, tuple(pieces)))
                    pieces, filled = [], 0
        if pieces:
            buckets.append(Bucket(dtype, filled, tuple(pieces)))
    return buckets


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _flat(tensor: Tensor) -> Tensor:
    """A 1-d view sharing storage (parameters and buffers are contiguous)."""
    if not tensor.is_contiguous():
        raise ValueError("weight sync needs contiguous tensors")
    return tensor.detach().view(-1)


# ------------------------------------------------------------------------ distributed sync


@torch.no_grad()
def broadcast_weights(
    weights: Weights,
    src: int,
    group: dist.ProcessGroup | None = None,
    bucket_mb: float = DEFAULT_BUCKET_MB,
    device: torch.device | None = None,
) -> SyncStats:
    """Overwrite ``weights`` on every rank of ``group`` with those of global rank ``src``.

    Every rank of the group must call this with a model of the same architecture (dtypes may
    differ on receivers). ``src`` is a global rank, as in ``torch.distributed.broadcast``.
    ``device`` holds the bucket buffers (default: where the weights are); NCCL needs a GPU
    one even when the source's weights were gathered to CPU.
    """
    started = time.perf_counter()
    source = dist.get_rank() == src
    named = named_tensors(weights) if source else []
    layout = [(name, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for name, t in named]
    message = [layout if source else None]
    dist.broadcast_object_list(message, src=src, group=group)
    layout = message[0]
    tensors = [t for _, t in named] if source else _targets(layout, weights)
    specs = [(getattr(torch, dtype), _numel(shape)) for _, shape, dtype in layout]
    buckets = plan_buckets(specs, int(bucket_mb * 2**20))
    flats = [_flat(t) for t in tensors]
    device = device or (flats[0].device if flats else torch.device("cpu"))
    scratch: dict[torch.dtype, Tensor] = {}
    total = 0
    for bucket in buckets:
        if bucket.dtype not in scratch:  # one buffer per dtype, sized for its largest bucket
            size = max(b.numel for b in buckets if b.dtype == bucket.dtype)
            scratch[bucket.dtype] = torch.empty(size, dtype=bucket.dtype, device=device)
        buffer = scratch[bucket.dtype][: bucket.numel]
        if source:
            for p in bucket.pieces:
                buffer[p.offset : p.offset + p.stop - p.start].copy_(
                    flats[p.index][p.start : p.stop]
                )
        dist.broadcast(buffer, src=src, group=group)
        if not source:
            for p in bucket.pieces:
                flats[p.index][p.start : p.stop].copy_(
                    buffer[p.offset : p.offset + p.stop - p.start]
                )
        total += buffer.numel() * buffer.element_size()
    return SyncStats(len(tensors), total, len(buckets), time.perf_counter() - started)


def _numel(shape: Sequence[int]) -> int:
    out = 1
    for size in shape:
        out *= size
    return out


def make_sync_group(ranks: Sequence[int], backend: str | None = None) -> dist.ProcessGroup:
    """A dedicated group for trainer → rollout syncs (trainer rank first by convention).

    ``torch.distributed.new_group`` is collective over the *default* group: every process of
    the job must call this, in the same order, even those not in ``ranks``.
    """
    return dist.new_group(ranks=sorted(ranks), backend=backend)


# ---------------------------------------------------------------------- in-process variant


@torch.no_grad()
def copy_weights(source: Weights, target: Weights) -> SyncStats:
    """Copy ``source``'s weights into ``target`` in place (same process; casts dtypes)."""
    started = time.perf_counter()
    named = named_tensors(source)
    layout = [(name, tuple(t.shape)) for name, t in named]
    total = 0
    for (_, s), d in zip(named, _targets(layout, target), strict=True):
        d.copy_(s)
        total += s.numel() * s.element_size()
    return SyncStats(len(named), total, 0, time.perf_counter() - started)


# ------------------------------------------------------------------------- verification


def checksum(weights: Weights) -> str:
    """SHA-256 of every tensor's name, dtype, shape and bytes: equal iff bitwise equal.

    Deterministic across processes and runs (no float reduction order involved); it reads
    every byte, so use it in tests and debug checks, not on every step of a large model.
    """
    digest = hashlib.sha256()
    for name, tensor in named_tensors(weights):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(_bytes(tensor))
    return digest.hexdigest()


def _bytes(tensor: Tensor) -> bytes:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def iter_mismatches(a: Weights, b: Weights) -> Iterator[str]:
    """Names of tensors that are not bitwise equal (for error messages in tests)."""
    for (name, x), (_, y) in zip(named_tensors(a), named_tensors(b), strict=True):
        if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x.cpu(), y.cpu()):
            yield name


# ----------------------------------------------------------------------------- schedule


@dataclass(frozen=True)
class SyncSchedule:
    """Sync trainer → rollout once the rollout copy is ``every`` updates behind.

    ``every=1`` syncs after each update. Larger values save transfers but let samples grow
    staler; the experience pipeline forces an earlier sync whenever waiting would let a
    sample exceed ``max_staleness``.
    """

    every: int = 1

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"sync_every={self.every}: expected an integer >= 1")

    def due(self, trainer_version: int, rollout_version: int) -> bool:
        return trainer_version - rollout_version >= self.every


# ------------------------------------------------------------- worker processes (Separate)


@dataclass(frozen=True)
class SyncRanks:
    """World ranks taking part in a trainer → rollout sync."""

    source: int  # the actor's rank 0: it sends
    receivers: tuple[int, ...]  # rollout workers holding their own copy of the policy
    gatherers: tuple[int, ...]  # actor ranks that gather the full weights first (FSDP), or source

    @property
    def group_ranks(self) -> tuple[int, ...]:
        """Members of the dedicated sync group (source first)."""
        return (self.source, *(r for r in self.receivers if r != self.source))

    @property
    def participants(self) -> tuple[int, ...]:
        return tuple(sorted({*self.gatherers, *self.receivers, self.source}))


def separate_sync_ranks(plan: Plan) -> SyncRanks | None:
    """Who syncs under ``plan``; None when every rollout worker samples with the actor's own
    module (Flatten, Interleave). A rollout worker shares the actor's module when the actor
    lives on its slot and is not sharded, or has exactly the rollout's workers (the rule of
    ``runtime/ray/host.py``); every other rollout worker holds a copy."""
    if Role.ACTOR not in plan.roles or Role.ROLLOUT not in plan.roles:
        return None
    actor = [plan.slots.index(s) for s in plan.worker_slots(Role.ACTOR)]
    rollout = [plan.slots.index(s) for s in plan.worker_slots(Role.ROLLOUT)]
    sharded = plan.roles[Role.ACTOR].sharding != Sharding.NONE and len(actor) > 1
    shares = [r in actor and (rollout == actor or not sharded) for r in rollout]
    receivers = tuple(r for r, shared in zip(rollout, shares, strict=True) if not shared)
    if not receivers:
        return None
    return SyncRanks(actor[0], receivers, tuple(actor) if sharded else (actor[0],))


def sync_on_host(
    rank: int,
    ranks: SyncRanks,
    group: dist.ProcessGroup | None,
    *,
    actor: Any = None,
    rollout_model: nn.Module | None = None,
    bucket_mb: float = DEFAULT_BUCKET_MB,
    device: torch.device | None = None,
) -> SyncStats | None:
    """One worker's part of a sync; every rank in ``ranks.participants`` must call it.

    ``actor`` is this worker's actor role (if any): a data-parallel one exposes ``dp`` and
    ``module``, and a sharded one ``weights()`` (a collective full gather). ``rollout_model``
    is this worker's own rollout copy (None when it shares the actor's module). ``group``
    is the dedicated group over ``ranks.group_ranks`` (None on workers outside it).
    """
    source_weights: Weights | None = None
    if rank in ranks.gatherers:
        sharded = getattr(getattr(actor, "dp", None), "sharded", False)
        module = getattr(actor, "module", actor.model)
        if sharded:  # the gathered full state dict; of a LoRA model, its adapters only
            gathered = actor.weights()
            source_weights = adapter_tensors(gathered) if is_lora(module) else gathered
        else:
            source_weights = sync_view(module)
    rollout_model = sync_view(rollout_model) if rollout_model is not None else None
    if rank == ranks.source:
        stats = broadcast_weights(source_weights, rank, group, bucket_mb, device)
        if rollout_model is not None:  # a copy on the source's own slot (sharded actor)
            copy_weights(source_weights, rollout_model)
        return stats
    if rank in ranks.receivers:
        return broadcast_weights(rollout_model, ranks.source, group, bucket_mb, device)
    return None


class RemoteRolloutSync:
    """The controller's side of syncs to rollout workers: a ``WeightSyncer`` for the pipeline.

    ``call_hosts(ranks, method, *args)`` runs a worker-host method on those world ranks at
    once and returns their results in order (the runtime's business; no Ray import here).
    The hosts need ``sync_rollout_weights(bucket_mb)`` (calling ``sync_on_host``), and
    ``weights(role)`` / ``load_weights(role, weights)`` for checkpoints.
    """

    def __init__(self, ranks: SyncRanks, call_hosts, bucket_mb: float = DEFAULT_BUCKET_MB):
        self.ranks, self.call_hosts, self.bucket_mb = ranks, call_hosts, bucket_mb

    def sync(self) -> SyncStats:
        ranks = self.ranks.participants
        results = self.call_hosts(ranks, "sync_rollout_weights", self.bucket_mb)
        return results[ranks.index(self.ranks.source)]

    def rollout_state(self) -> dict[str, Tensor]:
        return self.call_hosts(self.ranks.receivers[:1], "weights", Role.ROLLOUT.value)[0]

    def load_rollout_state(self, state: dict[str, Tensor]) -> None:
        self.call_hosts(self.ranks.receivers, "load_weights", Role.ROLLOUT.value, state)
