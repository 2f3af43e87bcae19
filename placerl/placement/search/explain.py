"""Show a search to a person: the ranked table, one sentence on why the pick wins, JSON.

The sentence compares the pick with the best candidate of the strategy a user would try
first (Flatten), in the cost model's own numbers: the share of generation in a Flatten step,
the cycles of a Separate pipeline, what a frozen-model split saves under Interleave, or the
memory limit that forced sharding or smaller micro-batches.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from placerl.placement.plan.strategies import plural
from placerl.placement.search.search import Scored, SearchResult

SHORT = {
    "generate": "gen",
    "update": "upd",
    "critic_update": "crit",
    "reference": "ref",
    "values": "val",
    "score": "score",
    "old_log_probs": "oldlp",
    "sync_guard": "guard",
    "sync": "sync",
    "offload": "offl",
    "controller": "ctl",
}


def phase_shares(s: Scored, top: int = 3) -> str:
    """The largest phases as shares of the step (a hidden phase can exceed the step's share
    of the critical path: it runs concurrently)."""
    if not s.prediction:
        return ""
    phases = sorted(s.prediction.phases.items(), key=lambda kv: -kv[1])[:top]
    step = s.prediction.step_s
    return " ".join(f"{SHORT.get(k, k)} {v / step:.0%}" for k, v in phases)


def table(result: SearchResult, top: int = 8) -> Table:
    t = Table(title="placement candidates (predicted)", title_justify="left")
    for name, right in (
        ("#", True),
        ("candidate", False),
        ("step s", True),
        ("samples/s", True),
        ("GB/device", True),
        ("critical path", False),
        ("phases", False),
    ):
        t.add_column(name, justify="right" if right else "left")
    shown = [s for s in result.ranked if s.feasible][:top]
    for i, s in enumerate(shown, 1):
        path = " → ".join(SHORT.get(p, p) for p in s.prediction.critical_path)
        t.add_row(
            str(i),
            s.name,
            f"{s.step_s:.3g}",
            f"{s.samples_per_s:.3g}",
            f"{s.memory_gb:.3g}",
            path,
            phase_shares(s),
        )
    return t


def infeasible_lines(result: SearchResult, top: int = 4) -> list[str]:
    """One line per infeasible family (strategy), its reason: which limit it breaks."""
    seen, out = set(), []
    for s in result.ranked:
        family = s.candidate.plan.strategy
        if s.feasible or family in seen:
            continue
        seen.add(family)
        out.append(f"{s.name}: does not fit: {s.reason}")
    return out[:top]


def _best(result: SearchResult, strategy: str) -> Scored | None:
    return next(
        (s for s in result.ranked if s.feasible and s.candidate.plan.strategy == strategy), None
    )


def why(result: SearchResult) -> str:
    """One sentence on why the pick wins."""
    pick = result.pick
    if pick is None:
        return "no candidate fits in memory; " + (result.ranked[0].reason if result.ranked else "")
    plan = pick.candidate.plan
    kind = "GPU" if plan.slots[0].kind == "gpu" else "slot"
    n = len(plan.slots)
    flat = _best(result, "flatten")
    pred = pick.prediction
    gen_share = ""
    if flat and "generate" in flat.prediction.phases:
        share = flat.prediction.phases["generate"] / flat.step_s
        gen_share = f"generation is {share:.0%} of a Flatten step ({flat.step_s:.3g} s); "
    if plan.strategy == "separate":
        gen = plan.group("gen").size
        rollout, trainer = pred.cycles.get("rollout", 0), pred.cycles.get("trainer", 0)
        hides = "hides it behind the update" if rollout <= trainer else "overlaps the update"
        speed = f", {flat.step_s / pick.step_s:.2f}x Flatten" if flat else ""
        return (
            f"{gen_share}Separate with {gen} of {plural(n, kind)} generating {hides} "
            f"(rollout cycle {rollout:.3g} s, trainer cycle {trainer:.3g} s: "
            f"{pick.step_s:.3g} s a step{speed})"
        )
    sep = _best(result, "separate")
    if plan.strategy == "interleave":
        ph = pred.phases
        both = ph.get("reference", 0) + ph.get("score", 0)
        return (
            f"reference and reward model score at the same time on disjoint halves "
            f"({max(ph.get('reference', 0), ph.get('score', 0)):.3g} s instead of {both:.3g} s "
            f"one after the other), and every {kind} still trains and generates"
        )
    if plan.strategy == "local":
        return (
            f"one process on every core avoids the workers' call and communication overheads: "
            f"{pick.step_s:.3g} s against {flat.step_s:.3g} s for Flatten"
            if flat
            else "one process on every core: nothing else fits"
        )
    if sep:
        train = sep.prediction.cycles.get("trainer", sep.step_s)
        stale = sep.candidate.plan.max_staleness
        reason = (
            "max_staleness is 0, so generation cannot overlap training"
            if stale == 0
            else f"its training on {plural(len(sep.candidate.plan.group('train').slots), kind)} "
            f"takes {train:.3g} s a step"
        )
        return (
            f"{gen_share}Flatten uses every {kind} for every phase; the best "
            f"Separate ({sep.name}) takes {sep.step_s:.3g} s because {reason}"
        )
    return f"{pick.name} is the fastest plan that fits ({pick.step_s:.3g} s a step)"


def candidate_json(s: Scored) -> dict[str, Any]:
    c = s.candidate
    plan = {**c.plan.to_dict(), "micro_batch": c.micro_batch, "checkpointing": c.checkpointing}
    pred = s.prediction
    return {
        "name": s.name,
        "plan": plan,
        "feasible": s.feasible,
        "reason": s.reason,
        "predicted": {
            "step_s": pred.step_s if pred else None,
            "samples_per_s": s.samples_per_s if pred else None,
            "memory_gb_per_device": round(s.memory_gb, 4),
            "phases": dict(pred.phases) if pred else {},
            "critical_path": list(pred.critical_path) if pred else [],
        },
    }


def search_json(result: SearchResult, top: int = 8) -> dict[str, Any]:
    feasible = [s for s in result.ranked if s.feasible][:top]
    infeasible = [s for s in result.ranked if not s.feasible][:top]
    return {
        "pick": result.pick.name if result.pick else None,
        "why": why(result),
        "calibration": result.machine.source if result.machine else None,
        "search_s": round(result.seconds, 4),
        "considered": result.considered,
        "pruned": result.pruned,
        "candidates": [candidate_json(s) for s in feasible + infeasible],
    }
