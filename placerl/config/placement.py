"""The ``placement:`` section: which strategy places the roles, on what cluster."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from placerl.config.section import Section


class PlacementConfig(Section):
    strategy: Literal["local", "flatten", "interleave", "separate", "custom"] = Field(
        "local", description="local: every role in this process; others run on Ray workers."
    )
    max_staleness: int = Field(
        0, ge=0, description="Most policy updates a training sample may lag (0: on-policy)."
    )
