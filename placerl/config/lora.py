"""The ``model.lora:`` section: low-rank adapters (peft LoRA) on every trained model.

``null`` (the default) trains every weight. A mapping — even ``{}``, or one override such as
``model.lora.r=16`` — turns LoRA on for the models a stage trains (policy, critic, reward
model): the base weights stay frozen, adapters on ``target_modules`` and any value/score head
are trained. With LoRA the reference model is the policy with its adapter disabled, so no
second copy of the base exists where the reference lives with the actor.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from placerl.config.section import Section

ALL_LINEAR = "all-linear"


class LoraConfig(Section):
    r: int = Field(8, gt=0, description="Rank of each adapter (the low-rank dimension).")
    alpha: float = Field(
        16.0, gt=0, description="LoRA scaling α: the update is scaled by alpha / r."
    )
    dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Dropout on the adapters' input (SFT, RM and DPO only: RL compares "
        "log-probs across passes, so RL stages require 0).",
    )
    target_modules: str | list[str] = Field(
        ALL_LINEAR,
        description="Linear layers that get adapters: 'all-linear' (every linear layer of the "
        "backbone, not the LM or value head) or a list of module names, e.g. [q_proj, v_proj].",
    )
    merge_on_export: bool = Field(
        False,
        description="Besides each adapter directory (e.g. policy/), export the merged model "
        "(policy_merged/) that from_pretrained loads without peft.",
    )
    seed: int = Field(
        0, description="Seed of the adapters' initialisation (the same on every worker)."
    )

    @field_validator("target_modules")
    @classmethod
    def _names(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str):
            if value != ALL_LINEAR:
                raise ValueError(
                    f"expected '{ALL_LINEAR}' or a list of module names, got {value!r}"
                )
            return value
        if not value:
            raise ValueError("expected at least one module name (or 'all-linear')")
        bad = [
            name
            for name in value
            if not name or not name.replace(".", "").replace("_", "").isalnum()
        ]
        if bad:
            raise ValueError(f"not a module name: {bad[0]!r}")
        return list(dict.fromkeys(value))
