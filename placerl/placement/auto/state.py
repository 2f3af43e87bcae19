"""What ``strategy: auto`` decided for a run, kept in ``run_dir/planner.json``.

The run's config stays ``placement.strategy: auto``; the Plan it runs on is *pinned* here, with
the settings auto applied to the config (micro-batch, checkpointing, offload), the cost model's
constants (refit to the run after a re-plan) and their stated uncertainty, how many re-plans
the run has made, the Plans it left (with their measured step times: the hysteresis of
``auto/replan.py``'s ``choose``), whether the current Plan is on trial, the measured cost of
each switch, and every change with its reason. A resume reads it back, so the resumed config is the one the run
trained with (``config/compare.py`` compares them) and a re-plan is not undone or repeated.
The file is written atomically; one that cannot be read is reported and the run plans afresh.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from placerl import atomic_dirs
from placerl.placement.cost.machine import Machine
from placerl.placement.plan.plan import Cluster, Plan
from placerl.placement.search.enumerate import Candidate

STATE_FILE = "planner.json"
VERSION = 1


def settings_of(c: Candidate) -> dict[str, Any]:
    """The candidate's settings beyond placement (``Candidate`` field names)."""
    return {
        "micro_batch": c.micro_batch,
        "checkpointing": c.checkpointing,
        "gen_waves": c.gen_waves,
        "offload": c.offload,
        "gen_tp": c.gen_tp,
    }


def candidate_key(plan: Plan, settings: dict[str, Any]) -> str:
    """What makes two candidates the same (the notes do not)."""
    raw = plan.to_dict()
    raw.pop("notes", None)
    return json.dumps({"plan": raw, "settings": settings}, sort_keys=True)


@dataclass
class Left:
    """A Plan the run ran on and left: from step ``since`` to ``until``."""

    key: str
    name: str
    since: int
    until: int
    measured_step_s: float | None  # median of its measured steps
    predicted_step_s: float


@dataclass
class AutoState:
    plan: Plan
    name: str
    settings: dict[str, Any]
    machine: Machine
    predicted_step_s: float
    applied: list[str] = field(default_factory=list)  # one line per setting: value and why
    since: int = 0  # the step the run started on this Plan from
    replans: int = 0
    checked: bool = False  # refit and re-searched on this Plan already
    left: list[Left] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # every change and why, in order
    uncertainty: float = 0.15  # the calibration's: predictions may be off by this share
    trial: bool = False  # on trial: kept only if it measures faster than left[-1] by the margin
    switch_costs: list[float] = field(default_factory=list)  # measured seconds of each switch

    @property
    def key(self) -> str:
        return candidate_key(self.plan, self.settings)

    @property
    def candidate(self) -> Candidate:
        return Candidate(self.plan, **self.settings)

    def fits(self, cluster: Cluster) -> bool:
        """Whether the pinned Plan's slots are all in ``cluster`` (it changed otherwise); the
        local plan runs in this process, whatever the workers' slots."""
        return self.plan.strategy == "local" or set(self.plan.slots) <= set(cluster.slots)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "plan": self.plan.to_dict(),
            "name": self.name,
            "settings": self.settings,
            "machine": asdict(self.machine),
            "predicted_step_s": self.predicted_step_s,
            "applied": self.applied,
            "since": self.since,
            "replans": self.replans,
            "checked": self.checked,
            "left": [asdict(x) for x in self.left],
            "events": self.events,
            "uncertainty": self.uncertainty,
            "trial": self.trial,
            "switch_costs": self.switch_costs,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AutoState:
        if raw.get("version") != VERSION:
            raise ValueError(f"version {raw.get('version')!r}, expected {VERSION}")
        known = Machine.__dataclass_fields__
        return cls(
            plan=Plan.from_dict(raw["plan"]),
            name=str(raw["name"]),
            settings=dict(raw["settings"]),
            machine=Machine(**{k: v for k, v in raw["machine"].items() if k in known}),
            predicted_step_s=float(raw["predicted_step_s"]),
            applied=list(raw.get("applied", [])),
            since=int(raw.get("since", 0)),
            replans=int(raw.get("replans", 0)),
            checked=bool(raw.get("checked", False)),
            left=[Left(**x) for x in raw.get("left", [])],
            events=list(raw.get("events", [])),
            uncertainty=float(raw.get("uncertainty", 0.15)),
            trial=bool(raw.get("trial", False)),
            switch_costs=[float(x) for x in raw.get("switch_costs", [])],
        )


def save_state(run_dir: str | Path, state: AutoState) -> None:
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    atomic_dirs.write_text(path / STATE_FILE, json.dumps(state.to_dict(), indent=1) + "\n")


def load_state(run_dir: str | Path) -> tuple[AutoState | None, str | None]:
    """The run's state, or None with a note saying why (None, None: there is none)."""
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        return None, None
    try:
        return AutoState.from_dict(json.loads(path.read_text(encoding="utf-8"))), None
    except (OSError, ValueError, KeyError, TypeError) as err:
        return None, f"auto: {path} cannot be read ({err}); planning afresh"
