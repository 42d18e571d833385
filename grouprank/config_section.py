"""The base of every configuration section: unknown keys and wrong types are rejected on load and on
assignment. Sections live in the package that uses them (`<package>/config.py`); `grouprank.config`
composes them into the run's `RunConfig`."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
