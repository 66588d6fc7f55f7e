"""`StrictModel`: the one pydantic base of every validated file model (policies, schedules, search spaces).

Unknown keys are refused (``extra="forbid"``, so a misspelt field is an error naming it, not a
silently ignored setting) and instances are immutable (``frozen=True``, so a validated model cannot
drift from what was checked). pydantic's configuration: https://docs.pydantic.dev/latest/api/config/.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A pydantic model that refuses unknown fields and cannot be changed after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)
