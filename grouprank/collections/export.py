"""Write a loaded collection as validated, versioned Parquet tables plus a summary."""
from __future__ import annotations

import json
from pathlib import Path

from data_schemas import DOCUMENTS, QRELS, QUARANTINE, QUERIES

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
    summary = out / "collection_summary.json"
    summary.write_text(json.dumps(c.stats(), indent=2))
    paths["summary"] = summary
    return paths
