"""``strategy: auto`` watches its Plan and re-plans, up to ``placement.max_replans`` times.

``PlannerMonitor`` is what the trainer calls each step: it logs ``planner/predicted_step_s``,
``planner/error`` (measured / predicted - 1) and ``planner/replans``. After
``placement.replan_after`` steps on a Plan it refits the cost model to the run's own phase
times — one factor each for generation, forward passes, updates and the controller's own
work, the median ratio of measured to predicted (``observed_phases`` maps the metrics onto the
model's phases) — and re-searches (holding the user's settings). ``choose`` takes the
fastest candidate predicted faster than the current Plan by more than
``placement.replan_margin``, except one the run already left, unless that one *measured*
faster by the margin than the current Plan measures now: so a run never flips back and forth
between two Plans on predictions alone. On a re-plan the trainer checkpoints the step and
raises ``Replan``; ``train`` resumes from that checkpoint with the user's config, still
``strategy: auto``, and ``prepare_auto`` reads the new Plan pinned in ``planner.json``, applies
its settings, and the new monitor watches again (checkpoints resume exactly on any Plan, and
under ``max_staleness: 0`` every Plan trains alike: the same training as a run started on the
new Plan). Each re-plan, refit and refusal is printed and kept in ``planner.json``'s events.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from placerl.placement.auto.plan import _DECISIONS, Decision, _search, with_notes
from placerl.placement.auto.settings import setting_lines
from placerl.placement.auto.state import (
    STATE_FILE,
    AutoState,
    Left,
    candidate_key,
    save_state,
    settings_of,
)
from placerl.placement.cost.machine import Machine
from placerl.placement.cost.phases import step_phases
from placerl.placement.cost.schedule import pipelined as pipelined_plan
from placerl.placement.cost.schedule import predict_step
from placerl.placement.search.search import Scored

GENERATE = ("generate",)
FORWARD = ("score", "reference", "values", "old_log_probs")
LEARN = ("update", "critic_update")
CONTROLLER = ("controller",)
HIDDEN = 0.05  # a pipelined rollout whose wait is under this share of the step is hidden


def phase_times(metrics: dict[str, float]) -> dict[str, float]:
    """A step's ``time/<phase>`` metrics by phase name (``time/step`` left out)."""
    return {k[5:]: v for k, v in metrics.items() if k.startswith("time/") and k != "time/step"}


def observed_phases(times: dict[str, float], step_s: float | None, pipelined: bool):
    """One step's phases as the cost model names them, from its ``time/<phase>`` metrics.

    The controller sees a generation where it waits for it: in ``generate``, or, when the
    sample was launched before (the experience pipeline), in ``wait_rollout``. Unpipelined,
    the generation is their sum. Pipelined (Separate, stale batches), a rollout that makes the
    trainer wait sets the pace: its cycle is the step less the sync (``schedule``); one that
    never does is hidden, and this step says nothing of its speed (a local background
    rollout's own ``ahead/generate`` does). ``controller`` is the step less every phase."""
    out = {k: v for k, v in times.items() if not k.startswith("ahead/")}
    phases = sum(out.values())
    if "generate" in out or "wait_rollout" in out:
        gen, wait = out.pop("generate", 0.0), out.pop("wait_rollout", 0.0)
        if not pipelined:
            out["generate"] = gen + wait
        elif "ahead/generate" in times:
            out["generate"] = times["ahead/generate"]
        elif step_s and wait >= HIDDEN * step_s:
            out["generate"] = step_s - out.get("sync", 0.0)
    if step_s:
        out["controller"] = max(0.0, step_s - phases)
    return out


def refit_factors(predicted: dict[str, float], measured: dict[str, list[float]]) -> dict:
    """Measured / predicted per kind of phase (the median over its phases and steps)."""
    out = {}
    kinds = (
        ("generation", GENERATE),
        ("forward", FORWARD),
        ("update", LEARN),
        ("controller", CONTROLLER),
    )
    for kind, names in kinds:
        ratios = [
            statistics.median(measured[n]) / predicted[n]
            for n in names
            if measured.get(n) and predicted.get(n)
        ]
        if ratios:
            out[kind] = statistics.median(ratios)
    return out


def refit(m: Machine, predicted: dict[str, float], measured: dict[str, list[float]]) -> Machine:
    """Scale the machine's rates so each phase kind's prediction matches the median of its
    measured times (kinds not measured keep their rates)."""
    f = refit_factors(predicted, measured)
    changes: dict[str, float] = {}
    if "generation" in f:
        gen = f["generation"]
        changes |= {
            "decode_flops": m.decode_flops / gen,
            "prefill_flops": m.prefill_flops / gen,
            "decode_overhead_per_layer": m.decode_overhead_per_layer * gen,
            "decode_overhead_per_layer_all": m.decode_overhead_per_layer_all * gen,
        }
    if "forward" in f:
        fwd = f["forward"]
        changes |= {
            "forward_flops": m.forward_flops / fwd,
            "value_forward_flops": m.value_forward_flops / fwd,
        }
    if "update" in f:
        up = f["update"]
        changes |= {
            "train_flops": m.train_flops / up,
            "value_train_flops": m.value_train_flops / up,
            "optimizer_params_per_s": m.optimizer_params_per_s / up,
        }
        for kind in ("", "value_", "prefix_"):  # None: a value model takes the policy's
            for name in (f"{kind}update_overhead", f"{kind}update_overhead_all"):
                if getattr(m, name) is not None:
                    changes[name] = getattr(m, name) * up
    if "controller" in f:
        own = f["controller"]
        changes |= {
            "step_overhead": m.step_overhead * own,
            "worker_step_overhead": m.worker_step_overhead * own,
        }
    return m.with_(**changes, source=f"{m.source}, refit to the run") if changes else m


def choose(
    current_key: str,
    current_s: float,
    measured_s: float | None,
    ranked: Sequence[Scored],
    left: Sequence[Left],
    margin: float,
) -> tuple[Scored | None, list[str]]:
    """The candidate to re-plan to (None: stay), and notes on the ones passed over."""
    been = {x.key: x for x in left}
    notes: list[str] = []
    for s in ranked:
        if (
            not s.feasible
            or candidate_key(s.candidate.plan, settings_of(s.candidate)) == current_key
        ):
            break
        gain = 1 - s.step_s / current_s
        if gain <= margin:
            break
        old = been.get(candidate_key(s.candidate.plan, settings_of(s.candidate)))
        if old is not None:
            back = (
                old.measured_step_s is not None
                and measured_s is not None
                and old.measured_step_s < measured_s * (1 - margin)
            )
            if not back:
                notes.append(
                    f"planner: {s.name} is predicted {gain:.0%} faster, but the run left it at "
                    f"step {old.until} measuring {_s(old.measured_step_s)} a step (now "
                    f"{_s(measured_s)}): not going back"
                )
                continue
        return s, notes
    return None, notes


def _s(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.3g} s"


@dataclass
class PlannerMonitor:
    decision: Decision
    replan_after: int
    margin: float
    max_replans: int = 3
    measured: dict[str, list[float]] = field(default_factory=dict)
    steps: list[float] = field(default_factory=list)
    recommendation: Scored | None = None
    messages: list[str] = field(default_factory=list)
    pending: Any = None  # the Plan to continue on, once the step is checkpointed
    refit_machine: Machine | None = None

    def observe(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        """The planner's metrics for this step; after ``replan_after`` steps, the re-plan."""
        d = self.decision
        measured = metrics.get("time/step")
        out = {"planner/predicted_step_s": d.predicted_step_s, "planner/replans": d.state.replans}
        if measured:
            out["planner/error"] = measured / d.predicted_step_s - 1
            self.steps.append(measured)
        pipelined = pipelined_plan(d.plan, d.workload)
        for name, seconds in observed_phases(phase_times(metrics), measured, pipelined).items():
            self.measured.setdefault(name, []).append(seconds)
        if self.replan_after and len(self.steps) == self.replan_after and not d.state.checked:
            self.replan()
        return out

    def rank(self, machine: Machine) -> list[Scored]:
        """Every fitting candidate under ``machine``, fastest first."""
        d = self.decision
        return [s for s in _search(d.workload, d.cluster, machine, d.fixed).ranked if s.feasible]

    def replan(self) -> Scored | None:
        """Refit, re-search, and either set ``pending`` or record that the Plan stays."""
        d, st = self.decision, self.decision.state
        predicted = {p.name: p.seconds for p in step_phases(d.plan, d.workload, d.machine)}
        factors = refit_factors(predicted, self.measured)
        machine = refit(d.machine, predicted, self.measured)
        current = predict_step(d.plan, d.workload, step_phases(d.plan, d.workload, machine))
        measured = statistics.median(self.steps) if self.steps else None
        best, notes = choose(
            st.key, current.step_s, measured, self.rank(machine), st.left, self.margin
        )
        self.messages += notes
        refitted = ", ".join(f"{k} x{v:.2g}" for k, v in factors.items()) or "nothing measured"
        head = (
            f"planner: refit after {len(self.steps)} steps on {st.name} (measured / predicted: "
            f"{refitted}): it is predicted {current.step_s:.3g} s a step (measured {_s(measured)})"
        )
        if best is not None and st.replans >= self.max_replans:
            message = (
                f"{head}; {best.name} is predicted {best.step_s:.3g} s, but the run has "
                f"re-planned {st.replans} times (placement.max_replans {self.max_replans}): "
                "staying"
            )
            best = None
        elif best is None:
            message = f"{head}; no plan is faster by more than {self.margin:.0%}: keeping it"
        else:
            gain = 1 - best.step_s / current.step_s
            message = (
                f"{head}; {best.name} is predicted {best.step_s:.3g} s ({gain:.0%} faster): "
                "checkpointing and continuing on it"
            )
        self.messages.append(message)
        st.events += [*notes, message]
        if best is None:
            st.checked = True
            save_state(d.user_config.run_dir, st)
            return None
        self.recommendation, self.pending, self.refit_machine = best, best.candidate.plan, machine
        return best

    def replan_now(self, cfg: Any, step: int) -> Replan:
        """Pin the pending Plan in ``planner.json``; the exception that makes ``train``
        continue on it (with the user's config: auto applies the new Plan's settings)."""
        d, st, best = self.decision, self.decision.state, self.recommendation
        measured = statistics.median(self.steps) if self.steps else None
        left = [*st.left, Left(st.key, st.name, st.since, step, measured, st.predicted_step_s)]
        path = Path(d.user_config.run_dir) / STATE_FILE
        message = (
            f"planner: re-planned at step {step} ({st.replans + 1} of at most "
            f"{self.max_replans}): {st.name} -> {best.name}; placement.strategy stays auto, "
            f"the plan is pinned in {path}"
        )
        machine = self.refit_machine or d.machine
        plan = with_notes(best.candidate.plan, (f"auto: {best.name}, re-planned at step {step}",))
        new = AutoState(
            plan,
            best.name,
            settings_of(best.candidate),
            machine,
            best.step_s,
            setting_lines(best, d.workload, machine, d.fixed),
            since=step,
            replans=st.replans + 1,
            left=left,
            events=[*st.events, message],
        )
        save_state(d.user_config.run_dir, new)
        d.state = new
        return Replan(d.user_config, message)


class Replan(Exception):
    """Raised by the trainer after checkpointing: continue with ``config`` from there."""

    def __init__(self, config: Any, message: str):
        super().__init__(message)
        self.config = config
        self.message = message


def monitor_for(cfg: Any) -> PlannerMonitor | None:
    """The run's monitor when its placement was chosen by ``auto``; pins its decision in
    ``planner.json``."""
    decision = _DECISIONS.get(str(cfg.run_dir))
    if cfg.placement.strategy != "auto" or not isinstance(decision, Decision):
        return None
    save_state(cfg.run_dir, decision.state)  # with config.yaml: the run is built and restored
    p = cfg.placement
    return PlannerMonitor(decision, p.replan_after, p.replan_margin, p.max_replans)
