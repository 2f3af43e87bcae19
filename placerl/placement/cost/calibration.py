"""Which constants the cost model runs on here: a stored profile, a GPU's specs, or defaults.

``machine_for`` is the one place that chooses; ``placerl plan --auto`` and
``strategy: auto`` both ask it, and it returns a note saying what it chose.
"""

from __future__ import annotations

import json
from pathlib import Path

from placerl.placement.cost.machine import CPU_DEFAULT, Machine, from_profile, from_spec
from placerl.placement.cost.profiles import find_profile, shape_key
from placerl.placement.cost.shapes import ModelShape


def machine_for(device: str, shape: ModelShape, profile: str | None) -> tuple[Machine, str]:
    """The profiled constants (named file, or the store's), else the defaults; and a note."""
    if profile:
        raw = json.loads(Path(profile).read_text())
        return from_profile(raw), f"calibration: profile {profile}"
    found = find_profile(device, shape)
    if found:
        raw, path, exact = found
        how = (
            "reused"
            if exact
            else (f"reused (measured on shape {raw['key']['shape']}, not this {shape_key(shape)})")
        )
        return from_profile(raw), f"calibration: profile {path} {how}"
    if device != "cpu":
        from placerl.placement.cost.hardware import device_specs, engine_spec

        for name, spec in device_specs().items():
            if name in device.upper():
                return from_spec(spec, engine_spec("placerl")), f"calibration: {spec.name} specs"
    return CPU_DEFAULT, f"calibration: {CPU_DEFAULT.source}"
