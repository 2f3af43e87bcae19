"""KL-penalty coefficient controllers for the KL-shaped reward r − β·KL (Ziegler et al. 2019).

A controller holds β. ``update`` is called once per training step with the measured KL (the
per-sequence KL to the reference, summed over tokens and averaged over the batch) and the
number of samples in the step. Both controllers round-trip through ``state_dict`` so that a
resumed run continues with the exact same β.
"""

from __future__ import annotations

from typing import Any, Protocol


class KLController(Protocol):
    """What the trainer needs from a KL controller."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class FixedKLController:
    """A constant β (InstructGPT, Ouyang et al. 2022, uses a fixed β = 0.02)."""

    def __init__(self, coef: float) -> None:
        self.value = float(coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt: β stays fixed."""

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "fixed", "value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Proportional controller steering the KL toward ``target`` (Ziegler et al. 2019, §2.2).

    e = clip(KL / target − 1, −0.2, 0.2);  β ← β · (1 + e · n_steps / horizon).
    Too much KL raises β, too little lowers it; the clip bounds the change per step. Same update
    as TRL's ``AdaptiveKLController`` and OpenAI's lm-human-preferences.
    """

    def __init__(self, init_coef: float, target: float, horizon: int) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(
                f"adaptive KL control needs target > 0 and horizon > 0; got target={target}, "
                f"horizon={horizon}"
            )
        self.value = float(init_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "adaptive",
            "value": self.value,
            "target": self.target,
            "horizon": self.horizon,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])
        self.target = float(state["target"])
        self.horizon = int(state["horizon"])


def make_kl_controller(
    kind: str, coef: float, target: float | None = None, horizon: int | None = None
) -> KLController:
    """Build a controller: "fixed" (β = coef) or "adaptive" (β starts at coef; needs target
    and horizon)."""
    if kind == "fixed":
        return FixedKLController(coef)
    if kind == "adaptive":
        if target is None or horizon is None:
            raise ValueError(
                f"kl controller kind='adaptive' needs target and horizon; got target={target}, "
                f"horizon={horizon}"
            )
        return AdaptiveKLController(coef, target, horizon)
    raise ValueError(f"unknown kl controller kind={kind!r}; expected 'fixed' or 'adaptive'")
