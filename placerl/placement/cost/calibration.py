"""Which constants the cost model runs on here, and how far its predictions may be trusted.

``calibrate`` is the one place that chooses; ``placerl plan --auto`` and ``strategy: auto``
both ask it. In order:

1. a profile file the user named (``--profile``): used as given, its conditions reported;
2. this machine's stored profiles (``profiles.profiles_for``), this model's shape first, then
   the closest other shape: the first whose conditions hold now (``conditions.compare``
   against a one-second probe) — as it is, or rescaled when the machine is uniformly slower
   or faster. One that does not hold is refused and the note says why;
3. a GPU's published specs (GPU devices);
4. the built-in CPU defaults, with ``usable`` False: ``strategy: auto`` profiles first then.

Every calibration states an ``uncertainty``, the relative error its predictions may carry:
``EXACT`` for a profile of this shape taken under today's conditions (the planner's median
held-out error here, ``benchmarks/planner_accuracy.py``), wider when rescaled, wider with the
distance to another shape's, wide for specs and defaults. The re-planner tries a candidate
predicted within it of the running plan's measured step (``auto/replan.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from placerl.placement.cost.conditions import Conditions, Verdict, compare, probe_now
from placerl.placement.cost.machine import CPU_DEFAULT, Machine, from_profile, from_spec
from placerl.placement.cost.profiles import profiles_for, shape_key
from placerl.placement.cost.shapes import ModelShape

EXACT = 0.15  # a profile of this shape under the conditions it was measured in
RESCALED = 0.05  # added when the machine runs uniformly slower or faster than then
OTHER_SHAPE = 0.10  # added for a profile of another shape, plus PER_DISTANCE per unit
PER_DISTANCE = 0.10
SPEC = 0.5  # a GPU's published specs × efficiencies
DEFAULT = 0.6  # round figures for some x86 core


@dataclass(frozen=True)
class Calibration:
    machine: Machine
    note: str  # what was used, and why: printed by ``plan --auto`` and ``strategy: auto``
    uncertainty: float  # predictions may be off by this share (either way)
    usable: bool = True  # False: nothing measured here applies (the defaults stand in)
    path: Path | None = None
    refusals: tuple[str, ...] = ()  # profiles passed over, and why
    distance: float | None = None  # to the profiled shape (0: this shape; None: no profile)


def _threads() -> int:
    from placerl.placement.plan.cluster import available_cores

    return available_cores()


def check(raw: dict[str, Any], now: Conditions | None) -> Verdict:
    """A profile's recorded conditions against ``now`` (refused when it records none)."""
    then = raw.get("conditions")
    if not then:
        return Verdict(False, 1.0, {}, "it records no conditions to check (profile again)")
    if now is None:
        return Verdict(True, 1.0, {}, "conditions not checked")
    return compare(Conditions.from_dict(then), now)


def _uncertainty(verdict: Verdict, distance: float) -> float:
    u = EXACT + (RESCALED if verdict.rescaled else 0.0)
    if distance > 0:
        u += OTHER_SHAPE + PER_DISTANCE * distance
    return round(u, 3)


def from_stored(raw: dict, path: Path, distance: float, verdict: Verdict, shape: ModelShape):
    """The calibration of one stored profile that ``verdict`` allows."""
    machine = from_profile(raw)
    if verdict.rescaled:
        machine = machine.scaled(verdict.speed)
    u = _uncertainty(verdict, distance)
    which = (
        ""
        if distance == 0
        else (
            f" (measured on shape {raw['key']['shape']}, not this {shape_key(shape)}: the closest "
            f"stored, distance {distance:.2f}; scaled by the cost model)"
        )
    )
    note = f"calibration: profile {path} reused{which}; {verdict.reason}; predictions ±{u:.0%}"
    return Calibration(machine, note, u, True, path, (), distance)


def calibrate(
    device: str, shape: ModelShape, profile: str | None = None, probe: bool = True
) -> Calibration:
    """The constants for ``shape`` on ``device`` (see the module's order). ``probe`` False
    skips the conditions probe (a stored profile is then taken as it is)."""
    if profile:
        raw = json.loads(Path(profile).read_text())
        now = probe_now(_threads()) if probe and device == "cpu" else None
        verdict = check(raw, now) if raw.get("conditions") else None
        said = verdict.reason if verdict else "it records no conditions"
        u = EXACT if verdict and verdict.usable and not verdict.rescaled else EXACT + RESCALED
        return Calibration(
            from_profile(raw), f"calibration: profile {profile} (as given; {said})", u
        )
    refusals: list[str] = []
    now = None
    for raw, path, distance in profiles_for(device, shape):
        if device == "cpu":
            if now is None and probe and raw.get("conditions"):
                now = probe_now(_threads())
            verdict = check(raw, now if probe else None)
        else:
            verdict = Verdict(True, 1.0, {}, "a GPU profile (conditions not checked)")
        if verdict.usable:
            found = from_stored(raw, path, distance, verdict, shape)
            return Calibration(
                found.machine, found.note, found.uncertainty, True, path, tuple(refusals), distance
            )
        refusals.append(f"profile {path} refused: {verdict.reason}")
    if device != "cpu":
        from placerl.placement.cost.hardware import device_specs, engine_spec

        for name, spec in device_specs().items():
            if name in device.upper():
                note = f"calibration: {spec.name} specs; predictions ±{SPEC:.0%}"
                return Calibration(from_spec(spec, engine_spec("placerl")), note, SPEC)
    why = "; ".join(refusals) or "no profile of this machine"
    note = f"calibration: {CPU_DEFAULT.source} ({why}); predictions ±{DEFAULT:.0%}"
    return Calibration(CPU_DEFAULT, note, DEFAULT, False, None, tuple(refusals))


def machine_for(device: str, shape: ModelShape, profile: str | None) -> tuple[Machine, str]:
    """``calibrate``'s machine and note."""
    c = calibrate(device, shape, profile)
    return c.machine, c.note
