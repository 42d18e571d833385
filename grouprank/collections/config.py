"""Configuration of the `load` stage: which collection, in which format."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from grouprank.config_section import Section


class DataConfig(Section):
    collection: str = Field("scifact", description="built-in collection name, or a path with `format`")
    format: Literal["builtin", "beir", "bright", "jsonl", "csv", "parquet", "hf"] = "builtin"
    path: str | None = Field(None, description="path for non-builtin formats")
    data_root: str | None = Field(None, description="root of the built-in collections (default ../shared/data)")
    quarantine: bool = Field(False, description="write bad records to a quarantine table instead of failing")
