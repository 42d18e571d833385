"""Write a loaded collection as validated, versioned Parquet tables plus a summary."""
from __future__ import annotations

from pathlib import Path

from data_schemas import DOCUMENTS, QRELS, QUARANTINE, QUERIES

from grouprank.atomic import write_json_atomic

from .base import Collection


def export_collection(c: Collection, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "documents": DOCUMENTS.write(c.documents, out / "documents.parquet"),
        "queries": QUERIES.write(c.queries, out / "queries.parquet"),
        "qrels": QRELS.write(c.qrels, out / "qrels.parquet"),
    }
    if c.quarantine.num_rows:
        paths["quarantine"] = QUARANTINE.write(c.quarantine, out / "quarantine.parquet")
    summary = write_json_atomic(out / "collection_summary.json", c.stats())
    paths["summary"] = summary
    return paths
