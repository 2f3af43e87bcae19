"""Step time from a Plan's phases: list-schedule the step's dataflow (ReaLHF's ``simulate``).

A synchronous step is a chain of stages — generate · experience (score, reference, values) ·
old log-probs or the sync guard's forward · learn (update, critic update) · sync · offload. Inside a stage, phases run at
the same time when their groups are disjoint and one after the other on a shared group, so:

- **Flatten**: every phase on the one group — the step is the sum of the phases;
- **Interleave**: reference (g0) and reward model (g1) score concurrently:
  the experience stage costs ``max(reference, score)`` instead of their sum;
- **Separate, max_staleness ≥ 1**: the steady-state pipeline of ``runtime/pipeline.py``, one
  batch in flight. The controller awaits sample k, syncs if due, launches k+1, then runs the
  trainer's cycle ``T`` (experience + learn); generation ``G`` of k+1 runs meanwhile, so
  ``step = max(G, T) + sync / period``. When the experience calls a role on the rollout's
  workers (a rule reward placed with the rollout), it runs before the launch:
  ``step = E + sync / period + max(G, L)``. Weights go out every ``period =
  min(sync_every, max_staleness)`` updates (a sync is forced before a batch would exceed the
  bound). With ``max_staleness: 0`` it is the synchronous chain.

The controller's own work (``controller``: prompts, metrics, the log, launching calls) is one
more stage at the end of the chain; in the pipeline it is in the trainer's cycle, since the
controller runs it between the trainer's calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from placerl.placement.cost.phases import EXPERIENCE, LEARN, Phase, rollout_shares_actor
from placerl.placement.cost.workload import Workload
from placerl.placement.plan.plan import Plan
from placerl.types import Role

STAGES = (
    ("generate",),
    EXPERIENCE,
    ("old_log_probs", "sync_guard"),
    LEARN,
    ("sync",),
    ("offload",),
    ("controller",),
)


@dataclass(frozen=True)
class StepPrediction:
    step_s: float
    phases: dict[str, float]  # seconds of each phase (on its own workers)
    critical_path: tuple[str, ...]  # the phases the step waits for, in order
    hidden: tuple[str, ...] = ()  # phases overlapped by others (pipeline)
    cycles: dict[str, float] = field(default_factory=dict)  # Separate: rollout and trainer


def simulate(stages: Sequence[Sequence[Phase]]) -> tuple[float, tuple[str, ...]]:
    """Makespan of stages run in order, phases of a stage list-scheduled over their groups;
    and the critical path (per stage, the chain of phases that ends last)."""
    now, path = 0.0, []
    for stage in stages:
        free: dict[str, float] = {}
        chain: dict[str, list[str]] = {}
        ends = []
        for ph in stage:
            start = max([now, *(free.get(g, now) for g in ph.groups)])
            before = max(ph.groups, key=lambda g: free.get(g, now))
            end = start + ph.seconds
            names = [*chain.get(before, []), ph.name] if free.get(before, now) > now else [ph.name]
            for g in ph.groups:
                free[g], chain[g] = end, names
            ends.append((end, names))
        if ends:
            end, names = max(ends, key=lambda e: e[0])
            now = end
            path += names
    return now, tuple(path)


def _stages(phases: Sequence[Phase], names: Sequence[Sequence[str]]) -> list[list[Phase]]:
    return [[p for p in phases if p.name in stage] for stage in names]


def pipelined(plan: Plan, w: Workload) -> bool:
    """Batch k+1 is sampled while the trainer learns on batch k (Separate, stale batches)."""
    return plan.max_staleness > 0 and Role.ROLLOUT in plan.roles and not rollout_shares_actor(plan)


def predict_step(plan: Plan, w: Workload, phases: Sequence[Phase]) -> StepPrediction:
    seconds = {p.name: p.seconds for p in phases}
    if not pipelined(plan, w):
        step, path = simulate(_stages(phases, STAGES))
        return StepPrediction(step, seconds, path)
    gen_groups = set(plan.roles[Role.ROLLOUT].groups)
    gen = sum(p.seconds for p in phases if p.name == "generate")
    sync = sum(p.seconds for p in phases if p.name == "sync")
    period = max(1, min(w.sync_every, plan.max_staleness))
    experience = [p for p in phases if p.name in EXPERIENCE]
    launch_first = not any(set(p.groups) & gen_groups for p in experience)
    learn_names = (("old_log_probs", "sync_guard"), LEARN, ("offload",), ("controller",))
    if launch_first:
        train, path = simulate(_stages(phases, (EXPERIENCE, *learn_names)))
        head, head_path = 0.0, ()
    else:
        head, head_path = simulate([experience])
        train, path = simulate(_stages(phases, learn_names))
    step = head + sync / period + max(gen, train)
    if gen >= train:
        critical, hidden = (*head_path, "generate"), tuple(path)
    else:
        critical, hidden = (*head_path, *path), ("generate",)
    if sync:
        critical = (*critical, "sync")
    cycles = {"rollout": gen, "trainer": head + train}
    return StepPrediction(step, seconds, critical, hidden, cycles)
