"""Stage `retrieve` (stage contract, ARCHITECTURE.md): Parquet in, Parquet out.

    run(cfg, documents=<documents.parquet>, queries=<mined_queries.parquet>)
      -> {"outputs": {"candidates": ".../retrieve/candidates.parquet",     CANDIDATES table
                      "pool_run": ".../retrieve/candidates.trec",          the pool as a TREC run
                      "run": ".../retrieve/run.trec",                      fused top-depth ranking
                      "report": ".../retrieve/retrieval_report.json"},
          "stats": {...plain numbers...}}

Queries with a `decision` column are filtered to decision == "kept". Without `queries`, the
stage uses <work_dir>/mine_queries/mined_queries.parquet if present, else the collection's
queries of cfg.queries.splits; without `documents`, the configured collection's documents.
Indexes persist in <work_dir>/indexes (shared with the query-mining round-trip filter, which
builds the same hybrid retriever, so this stage then reuses them).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def run(cfg, documents: str | Path | None = None, queries: str | Path | None = None, *,
        show_progress: bool = False, encoder=None, **_: Any) -> dict[str, Any]:
    """`encoder`: an object with DenseEncoder's interface to use instead of the configured one."""
    from data_schemas import DOCUMENTS, QUERIES
    from .hybrid import run_stage
    docs = DOCUMENTS.read(documents) if documents else None
    q = QUERIES.read(queries) if queries else None
    return run_stage(cfg, q, docs, show_progress=show_progress, encoder=encoder)
