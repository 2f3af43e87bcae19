"""Score every candidate with the cost model and rank them (exhaustive, in Python).

For each placement (strategy × split × dp × sharding), ``best_settings`` walks the settings
from the cheapest: no offload before offload, no checkpointing before checkpointing, one
generation wave before several, the largest micro-batch before smaller ones, and stops at the
first that fits — each later choice does the same work with more calls, recomputes or copies,
so it can only be slower (the skipped ones are counted as pruned). A placement that fits
nowhere keeps the reason of its last try. Feasible candidates are ranked by step time.

``fixed`` holds settings the user chose (``micro_batch``, ``checkpointing``, ``offload``, as
``strategy: auto`` reads them from the config): only that value of each is tried.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from placerl.placement.cost.machine import Machine
from placerl.placement.cost.memory import memory_classes, memory_problem, slot_roles
from placerl.placement.cost.phases import step_phases
from placerl.placement.cost.schedule import StepPrediction, predict_step
from placerl.placement.cost.workload import Workload
from placerl.placement.plan.plan import Cluster, Plan
from placerl.placement.search.enumerate import (
    GEN_WAVES,
    Candidate,
    micro_batches,
    placements,
    tensor_parallel_sizes,
)
from placerl.types import Role

Fixed = Mapping[str, object]  # setting name -> the one value the search may try


@dataclass(frozen=True)
class Scored:
    candidate: Candidate
    feasible: bool
    reason: str  # why it does not fit, or "fits"
    prediction: StepPrediction | None
    memory_gb: float  # the most loaded slot's predicted peak, GB (1e9 bytes)
    rows: int

    @property
    def name(self) -> str:
        return self.candidate.name

    @property
    def step_s(self) -> float:
        return self.prediction.step_s if self.prediction else float("inf")

    @property
    def samples_per_s(self) -> float:
        return self.rows / self.step_s if self.prediction else 0.0


@dataclass
class SearchResult:
    ranked: list[Scored]  # feasible first, fastest first; then the infeasible
    considered: int = 0
    pruned: int = 0
    seconds: float = 0.0
    machine: Machine | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def pick(self) -> Scored | None:
        best = self.ranked[0] if self.ranked else None
        return best if best is not None and best.feasible else None


def score(c: Candidate, w: Workload, m: Machine) -> Scored:
    cw = c.applied(w)
    slots = memory_classes(c.plan, cw, machine=m)  # CPU slots: m's process baselines
    problem = memory_problem(c.plan, cw, slots=slots)
    peak = max((s.total for s in slots), default=0.0)
    if problem:
        return Scored(c, False, problem, None, peak / 1e9, w.rows)
    pred = predict_step(c.plan, cw, step_phases(c.plan, cw, m))
    return Scored(c, True, "fits", pred, peak / 1e9, w.rows)


def _offload_choices(plan: Plan, w: Workload, fixed: Fixed) -> tuple[bool, ...]:
    """Offload is tried on GPU slots that host several models, or held to the user's choice;
    on CPU slots it has no effect (never modelled)."""
    if plan.groups[0].slots[0].kind != "gpu" or w.offline:  # the offline runtime keeps all
        return (False,)
    if "offload" in fixed:
        return (bool(fixed["offload"]),)
    crowded = any(
        len([r for r in roles if r in w.shapes]) > 1 for _, roles in slot_roles(plan, True)
    )
    return (False, True) if crowded else (False,)


def best_settings(
    plan: Plan, dp: int, w: Workload, m: Machine, fixed: Fixed | None = None
) -> tuple[list[Scored], int, int]:
    """The fastest fitting settings of one placement, with pruning: for each offload and
    checkpointing choice, the fewest generation waves and then the largest micro-batch that
    fit (more waves or smaller micro-batches only add per-call overhead); checkpointing and
    offload are tried only when the cheaper choice does not fit. Returns the kept
    candidates (the fitting ones, or the last misfit), how many were scored, and pruned."""
    kept: list[Scored] = []
    scored = pruned = 0
    for tp in tensor_parallel_sizes(plan, w):  # not monotone: each TP degree is kept
        k, n, p = _best_at_tp(plan, dp, w, m, tp, fixed or {})
        kept += k
        scored += n
        pruned += p
    feasible = [s for s in kept if s.feasible]
    return (feasible or kept[-1:]), scored, pruned


def _best_at_tp(plan: Plan, dp: int, w: Workload, m: Machine, tp: int, fixed: Fixed):
    sizes = [fixed["micro_batch"]] if "micro_batch" in fixed else micro_batches(w, dp)
    ckpts = (bool(fixed["checkpointing"]),) if "checkpointing" in fixed else (False, True)
    offloads = _offload_choices(plan, w, fixed)
    waves_choices = GEN_WAVES if Role.ROLLOUT in w.roles else (1,)  # nothing generates
    total = len(sizes) * len(waves_choices) * len(ckpts) * len(offloads)
    kept: list[Scored] = []
    scored = 0
    last = None
    for offload in offloads:
        for ckpt in ckpts:
            found = None
            for waves in waves_choices:
                for mb in sizes:
                    scored += 1
                    last = score(Candidate(plan, mb, ckpt, waves, offload, tp), w, m)
                    if last.feasible:
                        found = last
                        break
                if found:
                    break
            if found:
                kept.append(found)
                if not ckpt:
                    break
        if kept:
            break
    if not kept and last is not None:
        kept.append(last)
    return kept, scored, total - scored


def search(
    w: Workload,
    cluster: Cluster,
    m: Machine,
    extra: Sequence[Plan] = (),
    fixed: Fixed | None = None,
) -> SearchResult:
    """Rank every placement of ``w`` on ``cluster`` (plus ``extra`` plans, e.g. the local
    one-process plan) under the constants ``m``, holding the settings in ``fixed``."""
    start = time.perf_counter()
    scored: list[Scored] = []
    considered = pruned = 0
    for plan, dp in [*((p, 1) for p in extra), *placements(w, cluster)]:
        kept, n, skipped = best_settings(plan, dp, w, m, fixed)
        scored += kept
        considered += n
        pruned += skipped
    scored.sort(key=lambda s: (not s.feasible, s.step_s, s.memory_gb))
    return SearchResult(scored, considered, pruned, time.perf_counter() - start, m)
