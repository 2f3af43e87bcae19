"""Which candidate ``strategy: auto`` switches to after a refit, if any (``replan.py``'s rules:
a trial must beat the running Plan's *measured* step by the margin at the optimistic end of the
model's uncertainty and repay a switch there and back; a Plan left is returned to only when it
measured faster)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from placerl.placement.auto.state import Left, candidate_key, settings_of
from placerl.placement.search.search import Scored

# a never-measured candidate may cost a switch there and one back: its gain must repay both
TRIAL_SWITCHES = 2


def key_of(s: Scored) -> str:
    return candidate_key(s.candidate.plan, settings_of(s.candidate))


def choose(
    current_key: str,
    current_s: float,
    measured_s: float | None,
    ranked: Sequence[Scored],
    left: Sequence[Left],
    margin: float,
    uncertainty: float = 0.0,
    budget: tuple[int, float] | None = None,
    variant: Variant | None = None,
) -> tuple[Scored | None, list[str]]:
    """The candidate to switch to (None: stay), and notes on the ones passed over.

    ``ranked``: fastest predicted first; ``measured_s``: the running Plan's measured step
    (else its prediction ``current_s`` stands in); ``uncertainty``: the model's (0: its
    ranking is trusted, nothing after the running Plan is tried); ``budget``: (steps left,
    seconds a switch costs) — a switch must repay itself over the steps left; ``variant``: how
    to judge a candidate that only varies the running Plan (``Variant``)."""
    been = {x.key: x for x in left}
    reference = measured_s if measured_s is not None else current_s
    goal = reference * (1 - margin)
    notes: list[str] = []
    for s in ranked:
        if not s.feasible:
            break
        key = key_of(s)
        if key == current_key:
            if uncertainty <= 0:
                break
            continue
        old = been.get(key)
        if old is not None:  # measured already: back only to one measured faster
            back, note = _back_to_measured(s, old, reference, goal, measured_s, uncertainty, budget)
            if back:
                return s, notes
            notes.extend([note] if note else [])
            continue
        if variant is not None and variant.covers(s):
            # the refit's residual on the running Plan carries over to a variant of it
            optimistic = s.step_s * reference / current_s / (1 + variant.uncertainty)
            if optimistic >= goal:
                continue
        else:
            optimistic = s.step_s / (1 + uncertainty)
        if optimistic >= goal:
            break  # the rest are predicted slower still
        if not repays(reference - optimistic, budget, switches=TRIAL_SWITCHES):
            notes.append(
                f"planner: {s.name} may be faster ({seconds_text(s.step_s)} predicted, ±{uncertainty:.0%}), "
                f"but not by enough to repay a switch there and back ({TRIAL_SWITCHES} x "
                f"{seconds_text(budget[1])}) over {budget[0]} steps"
            )
            break
        return s, notes
    return None, notes


def _back_to_measured(
    s: Scored,
    old: Left,
    reference: float,
    goal: float,
    measured_s: float | None,
    uncertainty: float,
    budget: tuple[int, float] | None,
) -> tuple[bool, str | None]:
    """Whether to go back to ``s``, a Plan the run left already, and a note when not: only to
    one measured faster than ``goal`` whose switch repays itself over the steps left."""
    if old.measured_step_s is not None and old.measured_step_s < goal:
        if repays(reference - old.measured_step_s, budget):
            return True, None
        return False, f"planner: {s.name} measured faster, but going back would not repay"
    if s.step_s / (1 + uncertainty) < goal:
        return False, (
            f"planner: {s.name} is predicted {seconds_text(s.step_s)}, but the run left it at step "
            f"{old.until} measuring {seconds_text(old.measured_step_s)} a step (now "
            f"{seconds_text(measured_s)}): not going back"
        )
    return False, None


@dataclass(frozen=True)
class Variant:
    """Candidates with the running Plan's strategy and groups (another sharding, micro-batch
    or checkpointing). The refit was fitted on this layout's phases, so its prediction for a
    variant is judged against the running Plan's refit prediction, within the calibration's
    uncertainty — not the wider one of the first prediction's error, which the refit has
    absorbed (a 4.1M RLOO tried Flatten-full, predicted 1% faster than Flatten measured,
    at ±37%: two switches, 19 s, for a Plan 31% slower)."""

    strategy: str
    groups: tuple
    uncertainty: float

    @staticmethod
    def of(plan: Any, uncertainty: float) -> Variant:
        return Variant(plan.strategy, _layout(plan), uncertainty)

    def covers(self, s: Scored) -> bool:
        plan = s.candidate.plan
        return plan.strategy == self.strategy and _layout(plan) == self.groups


def _layout(plan: Any) -> tuple:
    return tuple(sorted((role.value, tuple(p.groups)) for role, p in plan.roles.items()))


def repays(gain_per_step: float, budget: tuple[int, float] | None, switches: int = 1) -> bool:
    return budget is None or gain_per_step * budget[0] > switches * budget[1]


def seconds_text(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.3g} s"
