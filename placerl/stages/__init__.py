"""Stages: what one ``placerl train`` run trains.

A stage owns its models and data and exposes ``step``, ``evaluate``, ``trained_models``,
``state_dict``/``load_state_dict``; the trainer loop is the same for all of them.
"""

from __future__ import annotations

from placerl.config.schema import RunConfig


def build_stage(cfg: RunConfig):
    from placerl.models.device import resolve_device

    resolve_device(cfg.placement.device)  # placement.device: gpu without one fails here, first
    if cfg.stage in ("sft", "rm"):
        from placerl.stages.supervised import RewardModelStage, SFTStage

        return SFTStage(cfg) if cfg.stage == "sft" else RewardModelStage(cfg)
    if cfg.stage == "dpo":
        from placerl.stages.preference import OfflinePreferenceStage

        return OfflinePreferenceStage(cfg)
    if cfg.stage in ("online_dpo", "rso", "brain"):
        from placerl.stages.sampled_preference import build_sampled_preference_stage

        return build_sampled_preference_stage(cfg)
    from placerl.stages.online import OnlineRLStage

    return OnlineRLStage(cfg)
