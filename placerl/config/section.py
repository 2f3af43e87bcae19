"""The base of every config section: unknown keys are errors, not silently ignored.

Numbers are checked here once for every section: floats must be finite (``inf`` or ``.nan``
is never a sensible learning rate or coefficient; a NaN would slip past ``gt=0``), and
integers must fit the 64-bit integers of tensors, generators and counters (``10**40`` steps
would pass ``gt=0`` and never end).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

INT64 = 2**63


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _fits_int64(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and not -INT64 <= value < INT64:
            raise ValueError(f"{value:.3g} is too large: expected a 64-bit integer")
        return value
