"""Dealing one step's examples to data-parallel ranks and their micro-batches.

A *unit* is what is never split: an SFT example, or a preference pair (its two sequences go
through the same forward, and its loss couples them). Each unit has ``tokens`` (real tokens
over its sequences) and ``rows`` (its sequences), and a workload estimate

    w(t) = t + t² / (6·hidden)      for each of its sequences of t tokens

since a transformer layer costs about 24·h²·t FLOPs in its linear maps and 4·h·t² in
attention (verl's ``calculate_workload`` makes the same point with fixed constants).

Two ways to deal a batch (``trainer.balance``):

- ``tokens`` (after verl's ``seqlen_balancing``, written here): ranks get workload-balanced
  sets (largest unit first, to the least loaded rank); ``k`` is the most micro-batches any
  rank needs to keep every micro-batch within ``trainer.micro_batch_size`` sequences and
  ``max_tokens_per_micro_batch`` tokens; then every rank cuts its set into exactly ``k``
  workload-balanced micro-batches (largest first, to the least loaded one it fits in).
- ``none``: rank r takes the contiguous units ``[r·n/W, (r+1)·n/W)`` and cuts them in order
  (``models.micro_batches.pack_units``); a rank that needs fewer micro-batches than the most
  gets empty ones.

Either way every rank runs the same number of micro-batches (FSDP gathers weights in every
forward, a collective: a rank with an empty micro-batch runs a zero-weighted forward), units
are listed in batch order within every micro-batch and every rank (the order is restored),
and a unit over the limits goes alone. Nothing here is random: the same batch gives the same
deal, so a resumed run deals exactly as the uninterrupted one did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from placerl.models.micro_batches import MicroBatching, pack_units

BALANCE_MODES = ("tokens", "none")


@dataclass(frozen=True)
class Unit:
    """One indivisible item of a batch: its real tokens and its sequences."""

    tokens: int
    rows: int = 1
    work: float = 0.0  # the workload estimate (``workload``)


@dataclass(frozen=True)
class RankShare:
    """One rank's part of a step: batch positions, and its micro-batches of them."""

    units: list[int]  # batch positions this rank trains on, ascending
    parts: list[list[int]]  # its micro-batches (batch positions, ascending); [] runs empty


def workload(lengths: Sequence[int], hidden: int) -> float:
    """The cost estimate of a unit whose sequences have ``lengths`` real tokens."""
    return float(sum(t + t * t / (6.0 * max(1, hidden)) for t in lengths))


def deal(
    units: Sequence[Unit], world: int, spec: MicroBatching, balance: str = "tokens"
) -> list[RankShare]:
    """Each rank's share of ``units`` and its micro-batches (see the module docstring)."""
    if balance not in BALANCE_MODES:
        raise ValueError(f"unknown balance {balance!r}; expected one of {BALANCE_MODES}")
    if balance == "none":
        return _contiguous(units, world, spec)
    ranks = _least_loaded([u.work for u in units], world)
    count = max(_fewest_parts(units, members, spec) for members in ranks)
    while True:  # more parts than a rank needs always fit in practice; checked, not assumed
        cut = [_balanced_parts(units, members, count, spec) for members in ranks]
        if all(parts is not None for parts in cut):
            break
        count += 1
    return [RankShare(sorted(m), _ordered(p)) for m, p in zip(ranks, cut, strict=True)]


def _contiguous(units: Sequence[Unit], world: int, spec: MicroBatching) -> list[RankShare]:
    n = len(units)
    shares = []
    for r in range(world):
        members = list(range(r * n // world, (r + 1) * n // world))
        tokens = [u.tokens for u in units]
        width = max((units[i].rows for i in members), default=1)
        parts = pack_units([[i] for i in members], tokens, width, spec) if members else []
        shares.append((members, [p for p in parts if p]))
    count = max(1, max(len(parts) for _, parts in shares))
    return [RankShare(m, p + [[] for _ in range(count - len(p))]) for m, p in shares]


def _least_loaded(work: Sequence[float], bins: int) -> list[list[int]]:
    """Largest first, each to the bin with the least work (then the fewest items, then the
    lowest index): the LPT rule, within 4/3 of the best split."""
    members: list[list[int]] = [[] for _ in range(bins)]
    loads = [0.0] * bins
    for i in sorted(range(len(work)), key=lambda i: (-work[i], i)):
        b = min(range(bins), key=lambda b: (loads[b], len(members[b]), b))
        members[b].append(i)
        loads[b] += work[i]
    return members


def _fits(units: Sequence[Unit], part: list[int], extra: int, spec: MicroBatching) -> bool:
    """Whether ``part`` plus unit ``extra`` stays within the limits (a unit alone always)."""
    if not part:
        return True
    rows = sum(units[i].rows for i in part) + units[extra].rows
    tokens = sum(units[i].tokens for i in part) + units[extra].tokens
    return rows <= (spec.rows or rows) and tokens <= (spec.tokens or tokens)


def _fewest_parts(units: Sequence[Unit], members: list[int], spec: MicroBatching) -> int:
    """The fewest balanced micro-batches that hold ``members`` within the limits."""
    if not members or not spec.active:
        return 1
    rows = sum(units[i].rows for i in members)
    tokens = sum(units[i].tokens for i in members)
    by_rows = -(-rows // spec.rows) if spec.rows else 1
    by_tokens = -(-tokens // spec.tokens) if spec.tokens else 1
    need = max(by_rows, by_tokens)
    for count in range(max(1, min(need, len(members))), len(members) + 1):
        if _balanced_parts(units, members, count, spec) is not None:
            return count
    return len(members)


def _balanced_parts(
    units: Sequence[Unit], members: list[int], count: int, spec: MicroBatching
) -> list[list[int]] | None:
    """``members`` in ``count`` micro-batches: largest first, each to the least loaded one
    it fits in; None when some unit fits in none."""
    parts: list[list[int]] = [[] for _ in range(count)]
    loads = [0.0] * count
    for i in sorted(members, key=lambda i: (-units[i].work, i)):
        open_ = [p for p in range(count) if _fits(units, parts[p], i, spec)]
        if not open_:
            return None
        p = min(open_, key=lambda p: (loads[p], len(parts[p]), p))
        parts[p].append(i)
        loads[p] += units[i].work
    return parts


def _ordered(parts: list[list[int]]) -> list[list[int]]:
    """Units ascending within each part; parts by their first unit, empty ones last."""
    ordered = [sorted(p) for p in parts]
    return sorted(ordered, key=lambda p: (not p, p[0] if p else 0))


def max_rank_work(units: Sequence[Unit], shares: Sequence[RankShare]) -> float:
    """The heaviest rank's workload: what a step waits for."""
    return max(sum(units[i].work for i in share.units) for share in shares)
