"""Stage `mine_queries` (stage contract, HELPERS.md): Parquet in, Parquet out.

    run(cfg, documents=<documents.parquet>, queries=<queries.parquet>[, qrels=<qrels.parquet>])
      -> {"outputs": {"mined_queries": ".../mine_queries/mined_queries.parquet",
                      "report": ".../mine_queries/mine_queries_report.json"},
          "stats": {...plain numbers...}}

mined_queries.parquet is a QUERIES table holding every query with its decision (downstream
stages use decision == "kept"); its Parquet metadata carries the config hash and the report.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STAGE = "mine_queries"


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = v
    return out


def stats_of(report: dict) -> dict[str, Any]:
    """The plain-number summary (Prefect artifacts / run summary)."""
    f = report.get("filters", {})
    rt = f.get("roundtrip", {})
    lk = f.get("leakage", {})
    s: dict[str, Any] = {"total": report.get("total", 0), "kept": report.get("kept", 0),
                         "existing": report.get("existing", 0)}
    for k, v in report.get("decisions", {}).items():
        s[f"decision.{k}"] = v
    s["leakage.eval_queries"] = lk.get("eval_queries", 0)
    for k, v in lk.get("by_via", {}).items():
        s[f"leakage.via.{k}"] = v
    if rt.get("keep_rate") is not None:
        s["roundtrip.keep_rate"] = rt["keep_rate"]
        s["roundtrip.k"] = rt["k"]
    gen = report.get("generation")
    if gen:
        s.update({f"generation.{k}": v for k, v in _flat(gen).items() if isinstance(v, (int, float, str))})
    s["wall_s"] = report.get("wall_s", 0.0)
    return s


def write_outputs(cfg, table, report: dict) -> dict[str, str]:
    from data_schemas import QUERIES
    out = cfg.work_path / STAGE
    out.mkdir(parents=True, exist_ok=True)
    path = QUERIES.write(table, out / "mined_queries.parquet",
                         extra={"config_hash": cfg.section_hash("queries", "retrieval", "llm"),
                                "report": report})
    rpath = out / "mine_queries_report.json"
    tmp = rpath.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    tmp.replace(rpath)
    return {"mined_queries": str(path), "report": str(rpath)}


def run_tables(cfg, documents, queries, qrels=None, **kwargs) -> dict[str, Any]:
    """The stage on in-memory tables (the CLI uses this with a loaded collection)."""
    from .mine import mine_queries
    table, report = mine_queries(cfg, documents, queries, qrels, **kwargs)
    return {"outputs": write_outputs(cfg, table, report), "stats": stats_of(report)}


def run(cfg, documents: str | Path | None = None, queries: str | Path | None = None,
        qrels: str | Path | None = None, **_: Any) -> dict[str, Any]:
    """Stage entry point: Parquet paths from the load stage (documents, queries[, qrels])."""
    from data_schemas import DOCUMENTS, QRELS, QUERIES
    docs = DOCUMENTS.read(documents) if documents else None
    q = QUERIES.read(queries) if queries else None
    r = QRELS.read(qrels) if qrels else None
    return run_tables(cfg, docs, q, r)
