"""Stages: what one ``placerl train`` run trains.

Offline stages (``supervised.py``: sft, rm; ``preference.py``: dpo) own their models and data;
every online stage (ppo, grpo, rloo, online_dpo, rso, brain) is ``online.OnlineStage`` over the
runtime and the experience pipeline. The trainer loop is the same for all: it sees a ``Stage``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from placerl.config.schema import RunConfig

if TYPE_CHECKING:
    from torch import nn

    from placerl.data.stream import IndexStream
    from placerl.timing import PhaseTimer


class Stage(Protocol):
    """What the trainer loop (trainer.py) needs from a stage."""

    name: str
    tokenizer: object  # saved next to every exported model
    stream: IndexStream  # the seeded order training rows are drawn in (its size: the rows)

    def step(self, step: int, timer: PhaseTimer) -> dict[str, float]:
        """One training step (0-based); its metrics."""
        ...

    def evaluate(self) -> dict[str, float]:
        """Held-out metrics (empty when there is nothing to evaluate)."""
        ...

    def trained_models(self) -> dict[str, nn.Module]:
        """Name → model to checkpoint and export (weights current on the controller)."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def close(self) -> None:
        """Stop whatever the stage started (worker processes); called after failures too."""
        ...


def build_stage(cfg: RunConfig) -> Stage:
    from placerl.models.device import resolve_device

    resolve_device(cfg.placement.device)  # placement.device: gpu without one fails here, first
    if cfg.stage in ("sft", "rm"):
        from placerl.stages.supervised import RewardModelStage, SFTStage

        return SFTStage(cfg) if cfg.stage == "sft" else RewardModelStage(cfg)
    if cfg.stage == "dpo":
        from placerl.stages.preference import OfflinePreferenceStage

        return OfflinePreferenceStage(cfg)
    from placerl.stages.online import OnlineStage

    return OnlineStage(cfg)
