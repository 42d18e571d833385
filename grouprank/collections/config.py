"""Configuration of the `load` stage: which collection, in which format."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from grouprank.config_section import Section


class DataConfig(Section):
    collection: str = Field("scifact", description="built-in collection name, or a path with `format`")
    format: Literal["builtin", "beir", "bright", "trec", "jsonl", "csv", "parquet", "hf"] = Field(
        "builtin", description="builtin: a name of the built-in collections; beir: a BEIR folder; bright: a BRIGHT "
        "folder (excluded ids removed from runs); trec (or jsonl/csv/parquet with a folder): corpus.* + "
        "queries.* + TREC qrels in one folder; jsonl/csv/parquet (a file): a corpus; hf: save_to_disk folder")
    path: str | None = Field(None, description="path for non-builtin formats")
    data_root: str | None = Field(None, description="root of the built-in collections (default ../shared/data)")
    quarantine: bool = Field(False, description="write bad records to a quarantine table instead of failing")
