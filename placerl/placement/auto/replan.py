"""``strategy: auto`` watches its Plan, tries the candidates that may be faster, keeps the fastest.

``PlannerMonitor`` is what the trainer calls each step: it logs ``planner/predicted_step_s``,
``planner/error`` (measured / predicted - 1), ``planner/replans`` and, on the first step after
a switch, ``planner/switch_s``. After ``placement.replan_after`` steps on a Plan it refits the
cost model to the run's own phase times (``observe.py``), with multi-turn episodes first
taking the shape the run measured (``env/*``: ``cost/episodes.observed_shape``), and
re-searches, holding the user's settings. A prediction is only a prediction, so the search's answer is *tried*, not trusted:

- a candidate is tried when its predicted step, at the optimistic end of the model's
  uncertainty (``predicted / (1 + u)``, ``u`` the calibration's or, if larger, the model's
  error on the running Plan), is faster than the running Plan's *measured* step by more than
  ``placement.replan_margin``, and that gain over the steps left repays the round trip a trial
  may cost: two switches (there, and back should it measure slower). A switch costs what the
  switches measured so far cost, else the run's own start-up — at least ``DEFAULT_SWITCH_S``
  from an in-process start, whose start-up had no workers to launch. ``choose`` picks it;
- a trial runs ``replan_after`` steps. It is kept only if it *measured* faster than the Plan
  it left by the margin; otherwise the run goes back — when the steps left repay that switch —
  and never tries it again. A Plan the run left is returned to only when it measured faster
  than the running one by the margin: a run never goes back to a Plan measured slower;
- every switch (a trial or a return) checkpoints the step, raises ``Replan``, and ``train``
  resumes from the checkpoint on the new Plan (pinned in ``planner.json``; the config stays
  ``strategy: auto``). Its cost — the checkpoint, the new workers, the restore and the first
  step's warm-up — is measured and logged. At most ``placement.max_replans`` switches.

Under ``max_staleness: 0`` every Plan trains alike, so a run that switched trains as a run
started on its final Plan. Every refit, trial, verdict, switch and refusal is printed and kept
in ``planner.json``'s events.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from placerl.placement.auto.choose import Variant, choose, key_of, repays, seconds_text
from placerl.placement.auto.observe import observed_phases, phase_times, refit, refit_factors
from placerl.placement.auto.plan import _DECISIONS, Decision, _search, local_plans, with_notes
from placerl.placement.auto.settings import setting_lines
from placerl.placement.auto.state import (
    STATE_FILE,
    AutoState,
    Left,
    save_state,
    settings_of,
)
from placerl.placement.cost.episodes import observed_shape
from placerl.placement.cost.machine import Machine
from placerl.placement.cost.phases import step_phases
from placerl.placement.cost.schedule import pipelined as pipelined_plan
from placerl.placement.cost.schedule import predict_step
from placerl.placement.search.search import Scored

# the model's uncertainty: the calibration's, or its error on the running Plan, at most this
# (a candidate predicted at most (1 + this) times the goal is tried)
MAX_UNCERTAINTY = 1.0
DEFAULT_SWITCH_S = 10.0  # a switch's cost before any was measured (nor the start-up)
_SWITCHING: dict[str, float] = {}  # run_dir -> time.time() its switch began (this process)


@dataclass
class PlannerMonitor:
    decision: Decision
    replan_after: int
    margin: float
    max_replans: int = 3
    total_steps: int | None = None
    measured: dict[str, list[float]] = field(default_factory=dict)
    episodes: list[dict[str, float]] = field(default_factory=list)  # steps' env/* metrics
    steps: list[float] = field(default_factory=list)
    recommendation: Scored | None = None
    messages: list[str] = field(default_factory=list)
    pending: Any = None  # the Plan to continue on, once the step is checkpointed
    refit_machine: Machine | None = None
    rebuild_s: float | None = None  # start of the switch (or the run) to its first step
    switched: bool = False  # this Plan's run began with a switch (not the run's start)
    decided_at: float | None = None  # time.time() of the decision to switch

    def observe(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        """The planner's metrics for this step; after ``replan_after`` steps, the re-plan."""
        d, st = self.decision, self.decision.state
        measured = metrics.get("time/step")
        out = {"planner/predicted_step_s": d.predicted_step_s, "planner/replans": st.replans}
        if not self.steps:
            out |= self._first_step(measured or 0.0)
        if measured:
            out["planner/error"] = measured / d.predicted_step_s - 1
            self.steps.append(measured)
        if d.workload.episodes is not None:
            self.episodes.append({k: v for k, v in metrics.items() if k.startswith("env/")})
        pipelined = pipelined_plan(d.plan, d.workload)
        for name, seconds in observed_phases(phase_times(metrics), measured, pipelined).items():
            self.measured.setdefault(name, []).append(seconds)
        if self.replan_after and len(self.steps) == self.replan_after and not st.checked:
            self.replan(step)
        return out

    def advise(self, step: int, metrics: dict[str, float], say: Callable[[str], None]) -> bool:
        """The trainer's call after each step: ``metrics`` gain the planner's, what the planner
        has to say is said; whether to re-plan now (once the step is checkpointed)."""
        metrics |= self.observe(step, metrics)
        for message in self.messages:
            say(message)
        self.messages.clear()
        return self.pending is not None

    def _first_step(self, step_s: float) -> dict[str, float]:
        """The rebuild: from the switch (or ``prepare_auto``) to this first step's start."""
        d = self.decision
        switch = _SWITCHING.pop(str(d.user_config.run_dir), None)
        begun = switch or d.started_at
        if begun is None:
            return {}
        self.rebuild_s = max(0.0, time.time() - begun - step_s)
        self.switched = switch is not None
        st = d.state
        if not self.switched:
            return {}
        self.messages.append(
            f"planner: switched to {st.name} in {self.rebuild_s:.3g} s (checkpoint, new "
            "workers, restore)"
        )
        return {"planner/switch_s": self.rebuild_s}

    def rank(self, machine: Machine) -> list[Scored]:
        """Every fitting candidate under ``machine``, fastest first (the local plan too)."""
        d = self.decision
        extra = local_plans(d.user_config)
        result = _search(d.workload, d.cluster, machine, d.fixed, extra)
        return [s for s in result.ranked if s.feasible]

    def switch_estimate(self) -> float:
        """Seconds a switch costs here: the median of those measured, else the start-up (at
        least ``DEFAULT_SWITCH_S`` from local, whose start-up launched no workers)."""
        st = self.decision.state
        if st.switch_costs:
            return statistics.median(st.switch_costs)
        if self.rebuild_s is None:
            return DEFAULT_SWITCH_S
        start_up = self.rebuild_s + self._warmup()
        if self.decision.plan.strategy == "local":  # no workers were launched to start it
            return max(start_up, DEFAULT_SWITCH_S)
        return start_up

    def _warmup(self) -> float:
        """The first step's excess over the others' median."""
        if len(self.steps) < 2:
            return 0.0
        return max(0.0, self.steps[0] - statistics.median(self.steps[1:]))

    def replan(self, step: int) -> Scored | None:
        """Judge a trial, refit, re-search: set ``pending`` or record that the Plan stays."""
        d, st = self.decision, self.decision.state
        self._record_switch()
        machine, head = self._refit()
        measured = statistics.median(self.steps)
        budget = (self.steps_left(step), self.switch_estimate())
        ranked = self.rank(machine)
        if st.trial:
            verdict, back = self._judge_trial(measured, ranked, budget)
            st.events.append(verdict)
            self.messages.append(verdict)
            if back is not None:
                return self._switch(back, machine, f"{head}; back to {back.name}")
        u = min(MAX_UNCERTAINTY, max(st.uncertainty, abs(measured / d.predicted_step_s - 1)))
        current_s = predict_step(d.plan, d.workload, step_phases(d.plan, d.workload, machine))
        variant = Variant.of(d.plan, st.uncertainty)
        best, notes = choose(
            st.key, current_s.step_s, measured, ranked, st.left, self.margin, u, budget, variant
        )
        self.messages += notes
        st.events += notes
        message, best = self._say(head, best, measured, u)
        if best is None:
            self.messages.append(message)
            st.events.append(message)
            st.checked = True
            save_state(d.user_config.run_dir, st)
            return None
        return self._switch(best, machine, message)

    def _record_switch(self) -> None:
        """The switch that began this Plan's run: its rebuild and first-step warm-up."""
        st = self.decision.state
        if not self.switched or self.rebuild_s is None:
            return
        cost = self.rebuild_s + self._warmup()
        st.switch_costs.append(cost)
        note = (
            f"planner: the switch to {st.name} cost {cost:.3g} s (rebuild "
            f"{self.rebuild_s:.3g} s + first-step warm-up {self._warmup():.3g} s)"
        )
        self.messages.append(note)
        st.events.append(note)
        self.switched = False

    def _refit(self) -> tuple[Machine, str]:
        """The machine refit to this Plan's measured phases, and the line that says how."""
        d, st = self.decision, self.decision.state
        if d.workload.episodes is not None:  # the episodes as measured, before the rates
            d.workload = d.workload.with_(
                episodes=observed_shape(d.workload.episodes, self.episodes)
            )
        predicted = {p.name: p.seconds for p in step_phases(d.plan, d.workload, d.machine)}
        factors = refit_factors(predicted, self.measured)
        machine = refit(d.machine, predicted, self.measured, d.plan.strategy != "local")
        current = predict_step(d.plan, d.workload, step_phases(d.plan, d.workload, machine))
        refitted = ", ".join(f"{k} x{v:.2g}" for k, v in factors.items()) or "nothing measured"
        head = (
            f"planner: refit after {len(self.steps)} steps on {st.name} (measured / predicted: "
            f"{refitted}): it is predicted {current.step_s:.3g} s a step (measured "
            f"{seconds_text(statistics.median(self.steps))})"
        )
        return machine, head

    def _say(self, head: str, best: Scored | None, measured: float, u: float):
        """The message for ``choose``'s answer, and the answer within ``max_replans``."""
        st = self.decision.state
        if best is not None and st.replans >= self.max_replans:
            return (
                f"{head}; {best.name} is predicted {best.step_s:.3g} s, but the run has "
                f"re-planned {st.replans} times (placement.max_replans {self.max_replans}): "
                "staying"
            ), None
        if best is None:
            return (
                f"{head}; no plan may be faster by more than {self.margin:.0%} (the model's "
                f"uncertainty ±{u:.0%}) and repay a switch: keeping it"
            ), None
        gain = 1 - best.step_s / measured
        what = "trying it" if key_of(best) not in {x.key for x in st.left} else "going back"
        return (
            f"{head}; {best.name} is predicted {best.step_s:.3g} s ({gain:.0%} faster than "
            f"measured here; ±{u:.0%}): checkpointing and {what}"
        ), best

    def steps_left(self, step: int) -> int:
        total = self.total_steps or self.decision.user_config.trainer.steps
        return max(0, total - step)

    def _judge_trial(self, measured: float, ranked: list[Scored], budget):
        """The verdict on the running trial, and the Plan to go back to (None: stay)."""
        st = self.decision.state
        prev = st.left[-1]
        st.trial = False
        before = prev.measured_step_s
        if before is None or measured <= before * (1 - self.margin):
            gain = "" if before is None else f" ({1 - measured / before:.0%} faster)"
            return (
                f"planner: trial of {st.name}: measured {seconds_text(measured)} a step against "
                f"{seconds_text(before)} on {prev.name}{gain}: kept",
                None,
            )
        verdict = (
            f"planner: trial of {st.name}: measured {seconds_text(measured)} a step against {seconds_text(before)} "
            f"on {prev.name}: not faster by {self.margin:.0%}"
        )
        back = next((s for s in ranked if key_of(s) == prev.key), None)
        if back is None:
            return f"{verdict}; {prev.name} no longer fits: staying", None
        if st.replans >= self.max_replans:
            return f"{verdict}; placement.max_replans {self.max_replans} reached: staying", None
        if not repays(measured - before, budget):
            return f"{verdict}; going back would not repay its switch: staying", None
        return verdict, back

    def _switch(self, best: Scored, machine: Machine, message: str) -> Scored:
        self.messages.append(message)
        self.decision.state.events.append(message)
        self.recommendation, self.pending, self.refit_machine = best, best.candidate.plan, machine
        self.decided_at = time.time()
        return best

    def replan_now(self, cfg: Any, step: int) -> Replan:
        """Pin the pending Plan in ``planner.json``; the exception that makes ``train``
        continue on it (with the user's config: auto applies the new Plan's settings)."""
        d, st, best = self.decision, self.decision.state, self.recommendation
        measured = statistics.median(self.steps) if self.steps else None
        left = [*st.left, Left(st.key, st.name, st.since, step, measured, st.predicted_step_s)]
        trial = key_of(best) not in {x.key for x in st.left}
        path = Path(d.user_config.run_dir) / STATE_FILE
        message = (
            f"planner: re-planned at step {step} ({st.replans + 1} of at most "
            f"{self.max_replans}): {st.name} -> {best.name}"
            f"{' (a trial)' if trial else ' (measured faster before)'}; placement.strategy "
            f"stays auto, the plan is pinned in {path}"
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
            uncertainty=st.uncertainty,
            trial=trial,
            switch_costs=list(st.switch_costs),
        )
        save_state(d.user_config.run_dir, new)
        _SWITCHING[str(d.user_config.run_dir)] = self.decided_at or time.time()
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
