"""Weight-sync transport: named tensors from a trainer to a copy, in buckets, verified.

- ``named_tensors``: what a sync moves, a module's state dict (persistent buffers included) with
  a tied weight once, or a mapping (a gathered FSDP state dict) as given. Receivers match by
  name, so either source fits the same receiver.
- ``broadcast_weights``: from one source rank to every other rank of a dedicated
  ``torch.distributed`` group (gloo on CPU, NCCL on GPU), in buckets of about ``bucket_mb``.
  The source first broadcasts the layout (names, shapes, dtypes), so a receiver whose model does
  not match fails with a message naming the first mismatch instead of loading garbage. Tensors
  are flattened, per dtype, into one stream cut into buckets; a tensor larger than a bucket is
  split across buckets, so peak extra memory is one bucket whatever the model (veRL and OpenRLHF
  bucket the same way; they keep whole tensors). Receivers ``copy_`` each piece in place, which
  casts: a bf16 copy of an fp32 trainer works.
- ``fingerprint``: an exact, order-sensitive digest of a bucket's bytes, computed where the
  bucket lies (no host copy): the source's of what it sent and each receiver's of what arrived
  travel back in ``SyncStats`` and are compared by the sync guard (``guard.py``).
- ``copy_weights``: the in-process variant (a shadow module in the same process).
- ``checksum``: SHA-256 of names, dtypes, shapes and bytes, equal iff bitwise equal; it reads
  every byte on the host, so it is for tests and debugging.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

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


def _targets(layout: Sequence[tuple], weights: Weights) -> list[Tensor]:
    """The receiver's tensor for each (name, shape, …) the source sends, by name.

    Names, not positions, so a source that sends a tied weight once (a module) or under each
    name (a gathered state dict) fits the same receiver; every receiver tensor must be written.
    """
    mine = dict(weights.state_dict(keep_vars=True) if isinstance(weights, nn.Module) else weights)
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
    fingerprint: int | None = None  # of what this rank sent or received (``fingerprint``)

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
        capacity = max(1, bucket_bytes // dtype.itemsize)
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


def _flat(tensor: Tensor) -> Tensor:
    """A 1-d view sharing storage (parameters and buffers are contiguous)."""
    if not tensor.is_contiguous():
        raise ValueError("weight sync needs contiguous tensors")
    return tensor.detach().view(-1)


_PERIOD = 65521  # the position weights repeat with this period (a prime)
_MASK = (1 << 63) - 1
_POSITION_WEIGHTS: dict[torch.device, Tensor] = {}


def _position_weights(device: torch.device) -> Tensor:
    """1, 2, …, 65521 as int64 on ``device`` (cached: 512 KiB)."""
    weights = _POSITION_WEIGHTS.get(device)
    if weights is None:
        weights = torch.arange(1, _PERIOD + 1, dtype=torch.int64, device=device)
        _POSITION_WEIGHTS[device] = weights
    return weights


def _int64_words(tensor: Tensor) -> tuple[Tensor, int | None]:
    """A tensor's bytes as little-endian int64 words: the whole 8-byte words (a view where the
    storage allows, else a copy), and the last 1-7 bytes zero-padded to one more word (None
    when the size is a multiple of 8)."""
    raw = tensor.detach().reshape(-1).view(torch.uint8)
    whole = raw.numel() - raw.numel() % 8
    head = raw[:whole]
    if head.storage_offset() % 8:
        head = head.clone()
    words = head.view(torch.int64)
    if whole == raw.numel():
        return words, None
    tail = bytes(raw[whole:].cpu().tolist()) + bytes(8 - (raw.numel() - whole))
    return words, int.from_bytes(tail, "little", signed=True)


@torch.no_grad()
def fingerprint(tensors: Sequence[Tensor], seed: int = 0) -> int:
    """An exact, order-sensitive digest of the tensors' bytes, computed on their device.

    Each tensor's bytes (zero-padded to a multiple of 8) are read as little-endian int64
    words w_i and summed twice, Σ w_i and Σ (i mod 65521 + 1)·w_i, in int64 (wrap-around is
    exact, so the order of the reduction does not matter): a flipped bit, a swapped or
    missing element changes it. Not cryptographic.

    The weighted sum is taken as Σ_j (j + 1)·c_j over the column sums c_j of the words laid
    in rows of 65521 (exact modulo 2^64, as multiplication distributes) and Σ w_i as Σ_j c_j:
    one native int64 pass over the bytes, no per-element index and no widening cast. Reading
    4-byte words into int64 and forming ``i mod 65521`` per element made the digest most of a
    CPU sync's time (0.13 s of 9M fp32 parameters on one thread; now ~0.01 s).
    """
    digest = seed
    for tensor in tensors:
        words, tail = _int64_words(tensor)
        n = words.numel()
        full = n - n % _PERIOD
        plain = weighted = 0
        if n:
            weights = _position_weights(words.device)
            if full:
                columns = words[:full].view(-1, _PERIOD).sum(0)
                plain += int(columns.sum())
                weighted += int((columns * weights).sum())
            if n > full:
                rest = words[full:]
                plain += int(rest.sum())
                weighted += int((rest * weights[: n - full]).sum())
        if tail is not None:
            plain += tail
            weighted += (n % _PERIOD + 1) * tail
        digest = (digest * 1_000_003 + plain * 65_537 + weighted) & _MASK
    return digest


def received(buffer: Tensor) -> Tensor:
    """A bucket (or, in process, a tensor) as it arrived, before anything reads it: the seam
    where tests garble a transfer on purpose (tests/runtime/test_sync_guard_on_cpu.py)."""
    return buffer


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
    one even when the source's weights were gathered to CPU. The returned fingerprint is of
    the buckets this rank sent (source) or received.
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
    total, digest = 0, 0
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
            buffer = received(buffer)
            for p in bucket.pieces:
                flats[p.index][p.start : p.stop].copy_(
                    buffer[p.offset : p.offset + p.stop - p.start]
                )
        digest = fingerprint([buffer], digest)
        total += buffer.numel() * buffer.element_size()
    return SyncStats(len(tensors), total, len(buckets), time.perf_counter() - started, digest)


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
    """Copy ``source``'s weights into ``target`` in place (same process; casts dtypes). The
    fingerprint is of what the target holds, where its dtypes are the source's (else None)."""
    started = time.perf_counter()
    named = named_tensors(source)
    layout = [(name, tuple(t.shape)) for name, t in named]
    targets = _targets(layout, target)
    total = 0
    for (_, s), d in zip(named, targets, strict=True):
        d.copy_(received(s))
        total += s.numel() * s.element_size()
    same = all(s.dtype == d.dtype for (_, s), d in zip(named, targets, strict=True))
    digest = fingerprint(targets) if same else None
    return SyncStats(len(named), total, 0, time.perf_counter() - started, digest)


# ------------------------------------------------------------------------- verification


def checksum(weights: Weights) -> str:
    """SHA-256 of every tensor's name, dtype, shape and bytes: equal iff bitwise equal.

    Deterministic across processes and runs (no float reduction order involved); it reads
    every byte, so use it in tests and debug checks, not on every step of a large model.
    """
    digest = hashlib.sha256()
    for name, tensor in named_tensors(weights):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def iter_mismatches(a: Weights, b: Weights) -> Iterator[str]:
    """Names of tensors that are not bitwise equal (for error messages in tests)."""
    for (name, x), (_, y) in zip(named_tensors(a), named_tensors(b), strict=True):
        if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x.cpu(), y.cpu()):
            yield name
