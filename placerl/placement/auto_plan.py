"""``placement.strategy: auto``: run the planner's pick, watch it, and recommend a re-plan.

``auto_plan`` searches the worker placements of the run's cluster (the one-process ``local``
plan is not a candidate: ``auto`` runs on workers) with the stored profile's constants and
returns the fastest Plan that fits. With ``max_staleness > 0`` only plans whose rollout has
devices of its own (Separate) are candidates: the runtime refuses staleness otherwise. The
pick's micro-batch, checkpointing and offload settings are reported, not applied (they are
not placement).

``PlannerMonitor`` is what the trainer calls each step: it logs ``planner/predicted_step_s``
and ``planner/error`` (measured / predicted - 1). After ``placement.replan_after`` steps it
refits the cost model to the run's own phase times — one factor each for generation, forward
passes and updates, the median ratio of measured to predicted — re-searches, and when another
Plan is predicted faster by more than ``placement.replan_margin`` it says so in the log and
re-plans once: the trainer checkpoints that step, raises ``Replan``, and ``train`` resumes the
run from that checkpoint with the new Plan written as a ``custom`` placement (checkpoints
resume exactly on any Plan, and under ``max_staleness: 0`` every Plan trains alike: the same
training as a run started on the new Plan).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from placerl.placement.machine import Machine
from placerl.placement.phases import step_phases
from placerl.placement.plan import Cluster, Plan
from placerl.placement.schedule import predict_step
from placerl.placement.search import Scored, SearchResult, search
from placerl.placement.workload import Workload
from placerl.types import Role

FORWARD = ("score", "reference", "values", "old_log_probs")
LEARN = ("update", "critic_update")


@dataclass
class Decision:
    plan: Plan
    workload: Workload
    machine: Machine
    cluster: Cluster
    result: SearchResult
    predicted_step_s: float


_DECISIONS: dict[str, Decision] = {}  # run_dir -> the decision its runtime carries out


def _search(w: Workload, cluster: Cluster, m: Machine) -> SearchResult:
    result = search(w, cluster, m)
    if w.max_staleness > 0:  # the Ray runtime needs a rollout copy to run stale batches
        result.ranked = [s for s in result.ranked if s.candidate.plan.strategy == "separate"]
    return result


def auto_plan(cfg: Any, cluster: Cluster) -> Plan:
    """The pick for ``cfg`` on ``cluster``; remembered for the run's ``PlannerMonitor``."""
    from placerl.errors import UserError
    from placerl.placement.auto_command import device_name, machine_for
    from placerl.placement.explain import why
    from placerl.placement.workload import workload_from_config

    w = workload_from_config(cfg)
    m, note = machine_for(device_name(cluster), w.shapes[Role.ACTOR], None)
    result = _search(w, cluster, m)
    pick = result.pick
    if pick is None:
        reason = result.ranked[0].reason if result.ranked else "no candidate"
        raise UserError(f"auto: no plan fits this cluster: {reason}", where="placement.strategy")
    notes = (
        f"auto: {pick.name}, predicted {pick.step_s:.3g} s a step ({note})",
        f"auto: {why(result)}",
        *pick.candidate.plan.notes,
    )
    plan = Plan(
        pick.candidate.plan.strategy,
        pick.candidate.plan.groups,
        pick.candidate.plan.roles,
        pick.candidate.plan.max_staleness,
        notes,
    )
    _DECISIONS[str(cfg.run_dir)] = Decision(
        plan, pick.candidate.applied(w), m, cluster, result, pick.step_s
    )
    return plan


def refit(m: Machine, predicted: dict[str, float], measured: dict[str, list[float]]) -> Machine:
    """Scale the machine's rates so each phase kind's prediction matches the median of its
    measured times (kinds not measured keep their rates)."""

    def factor(names) -> float | None:
        ratios = [
            statistics.median(measured[n]) / predicted[n]
            for n in names
            if measured.get(n) and predicted.get(n)
        ]
        return statistics.median(ratios) if ratios else None

    changes: dict[str, float] = {}
    gen = factor(("generate",))
    if gen:
        changes |= {
            "decode_flops": m.decode_flops / gen,
            "prefill_flops": m.prefill_flops / gen,
            "decode_overhead_per_layer": m.decode_overhead_per_layer * gen,
        }
    fwd = factor(FORWARD)
    if fwd:
        changes["forward_flops"] = m.forward_flops / fwd
    learn = factor(LEARN)
    if learn:
        changes |= {
            "train_flops": m.train_flops / learn,
            "optimizer_params_per_s": m.optimizer_params_per_s / learn,
        }
    return m.with_(**changes, source=f"{m.source}, refit to the run") if changes else m


@dataclass
class PlannerMonitor:
    decision: Decision
    replan_after: int
    margin: float
    measured: dict[str, list[float]] = field(default_factory=dict)
    steps: list[float] = field(default_factory=list)
    recommendation: Scored | None = None
    messages: list[str] = field(default_factory=list)
    pending: Plan | None = None  # the Plan to continue on, once the step is checkpointed

    def observe(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        """The planner's metrics for this step; after ``replan_after`` steps, the re-plan."""
        d = self.decision
        measured = metrics.get("time/step")
        out = {"planner/predicted_step_s": d.predicted_step_s}
        if measured:
            out["planner/error"] = measured / d.predicted_step_s - 1
            self.steps.append(measured)
        for key, value in metrics.items():
            if key.startswith("time/") and key != "time/step":
                self.measured.setdefault(key[5:], []).append(value)
        if self.replan_after and len(self.steps) == self.replan_after:
            self.replan()
        return out

    def replan(self) -> Scored | None:
        d = self.decision
        predicted = {p.name: p.seconds for p in step_phases(d.plan, d.workload, d.machine)}
        machine = refit(d.machine, predicted, self.measured)
        current = predict_step(d.plan, d.workload, step_phases(d.plan, d.workload, machine))
        best = _search(d.workload, d.cluster, machine).pick
        gain = 1 - best.step_s / current.step_s if best else 0.0
        if best is None or gain <= self.margin:
            self.messages.append(
                f"planner: refit after {len(self.steps)} steps: the current plan is predicted "
                f"{current.step_s:.3g} s a step (measured {statistics.median(self.steps):.3g} s); "
                f"no plan is faster by more than {self.margin:.0%}: keeping it"
            )
            return None
        self.recommendation = best
        self.pending = best.candidate.plan
        self.messages.append(
            f"planner: refit after {len(self.steps)} steps: {best.name} is predicted "
            f"{best.step_s:.3g} s a step against {current.step_s:.3g} s for the current "
            f"{d.plan.strategy} plan ({gain:.0%} faster): checkpointing and continuing on it"
        )
        return best

    def replan_now(self, cfg: Any, step: int) -> Replan:
        """The exception that makes ``train`` continue on the pending Plan."""
        new = plan_config(cfg, self.pending, self.decision.cluster)
        return Replan(
            new,
            f"planner: re-planned at step {step}: {self.decision.plan.strategy} "
            f"-> {self.pending.strategy} (as placement.strategy custom)",
        )


class Replan(Exception):
    """Raised by the trainer after checkpointing: continue with ``config`` from there."""

    def __init__(self, config: Any, message: str):
        super().__init__(message)
        self.config = config
        self.message = message


def plan_config(cfg: Any, plan: Plan, cluster: Cluster) -> Any:
    """``cfg`` with ``plan`` as a custom placement on the same cluster (slot indices)."""
    from placerl.config.placement import PlacementConfig

    index = {id(s): i for i, s in enumerate(cluster.slots)}
    position = {s: i for i, s in enumerate(cluster.slots)}
    groups = {g.name: [index.get(id(s), position.get(s)) for s in g.slots] for g in plan.groups}
    roles = {
        role.value: {
            "group": list(p.groups) if p.also_on else p.group,
            "dp_size": p.dp_size,
            "sharding": p.sharding.value,
            "shard_size": p.shard_size,
        }
        for role, p in plan.roles.items()
    }
    raw = cfg.placement.model_dump()
    raw |= {
        "strategy": "custom",
        "groups": groups,
        "roles": roles,
        "sharding": "none",
        "shard_size": None,
        "generation_slots": None,
    }
    return cfg.model_copy(update={"placement": PlacementConfig.model_validate(raw)})


def monitor_for(cfg: Any) -> PlannerMonitor | None:
    """The run's monitor when its placement was chosen by ``auto``."""
    decision = _DECISIONS.get(str(cfg.run_dir))
    if cfg.placement.strategy != "auto" or decision is None:
        return None
    return PlannerMonitor(decision, cfg.placement.replan_after, cfg.placement.replan_margin)
