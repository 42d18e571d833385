"""Stages `judge` and `fuse` (stage contract, HELPERS.md): Parquet in, Parquet out.

    run(cfg, documents=<documents.parquet>, queries=<mined_queries.parquet>, candidates=<candidates.parquet>)
      -> {"outputs": {"judgments": ".../judge/judgments.parquet",        JUDGMENTS table
                      "report": ".../judge/judge_report.json"},          usage per judge
          "stats": {...}}
       with cfg.judges.dry_run: {"outputs": {"estimate": ".../judge/dry_run.json"}, "stats": {...}}
    run_fuse(cfg, judgments=<judgments.parquet>)
      -> {"outputs": {"labels": ".../fuse/labels.parquet", "report": ".../fuse/fusion_report.json"}, "stats": {...}}

Without `documents` / `queries` the configured collection's tables are used; without
`candidates`, <work_dir>/retrieve/candidates.parquet.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable


def _tables(cfg, documents, queries, candidates):
    from data_schemas import CANDIDATES, DOCUMENTS, QUERIES
    from grouprank.errors import UserError
    cand_path = Path(candidates) if candidates else cfg.work_path / "retrieve" / "candidates.parquet"
    if not cand_path.exists():
        raise UserError(f"judge: candidates table not found: {cand_path}")
    cands = CANDIDATES.read(cand_path)
    coll = None
    if documents:
        docs = DOCUMENTS.read(documents)
    else:
        from grouprank.collections import load_from_config
        coll = load_from_config(cfg)
        docs = coll.documents
    if queries:
        qs = QUERIES.read(queries)
    else:
        if coll is None:
            from grouprank.collections import load_from_config
            coll = load_from_config(cfg)
        qs = coll.queries
    return cands, docs, qs


def run(cfg, documents: str | Path | None = None, queries: str | Path | None = None,
        candidates: str | Path | None = None, *, progress: Callable | None = None,
        api_keys: dict[str, str] | None = None, **_: Any) -> dict[str, Any]:
    from data_schemas import JUDGMENTS

    from .base import JudgePool, _doc_text
    from .runner import dry_run, judgments_table, run_judges
    out = cfg.work_path / "judge"
    out.mkdir(parents=True, exist_ok=True)
    cands, docs, qs = _tables(cfg, documents, queries, candidates)
    pool = JudgePool.from_tables(cands, docs, qs, max_per_query=cfg.judges.max_per_query)
    stats: dict[str, Any] = {"queries": len(pool.pools), "pairs": pool.n_pairs,
                             "judges": len(cfg.judges.judges)}
    if cfg.judges.dry_run:
        est = dry_run(cfg, pool)
        p = out / "dry_run.json"
        p.write_text(json.dumps(est, indent=1))
        stats.update({f"est.{k}": v for k, v in est["total"].items()})
        for jid, e in est["judges"].items():
            stats[f"{jid}.est_calls"] = e["calls"]
            stats[f"{jid}.est_prompt_tokens"] = e["prompt_tokens"]
            stats[f"{jid}.est_cost_usd"] = e.get("est_cost_usd", 0.0)
        return {"outputs": {"estimate": str(p)}, "stats": stats}
    d = docs.to_pydict()
    background = {str(i): _doc_text(t, x) for i, t, x in zip(d["doc_id"], d["title"], d["text"])}
    rows, usage = run_judges(cfg, pool, background=background, progress=progress, api_keys=api_keys)
    path = JUDGMENTS.write(judgments_table(rows), out / "judgments.parquet",
                           extra={"usage": usage, "judges": cfg.judges.model_dump(mode="json")})
    rpath = out / "judge_report.json"
    rpath.write_text(json.dumps(usage, indent=1, default=str))
    stats["rows"] = len(rows)
    stats["failed"] = sum(1 for r in rows if r["status"] == "failed")
    stats["injection_flags"] = sum(1 for r in rows if r["injection_flag"])
    for jid, u in usage.items():
        for k in ("pairs_ok", "pairs_failed", "calls", "cached_calls", "retries", "prompt_tokens",
                  "completion_tokens", "cost_usd"):
            if k in u and isinstance(u[k], (int, float)):
                stats[f"{jid}.{k}"] = u[k]
    return {"outputs": {"judgments": str(path), "report": str(rpath)}, "stats": stats}


def run_fuse(cfg, judgments: str | Path | None = None, **_: Any) -> dict[str, Any]:
    from data_schemas import JUDGMENTS, LABELS

    from .fusion import fuse_labels
    jc = cfg.judges
    src = Path(judgments) if judgments else cfg.work_path / "judge" / "judgments.parquet"
    J = JUDGMENTS.read(src)
    table, rep = fuse_labels(J, method=jc.fusion, weights={s.id: s.weight for s in jc.judges}, beta=jc.beta,
                             grade_scale=jc.grade_scale, thresholds=jc.grade_thresholds,
                             rank_only_fractions=jc.rank_only_fractions, return_report=True)
    out = cfg.work_path / "fuse"
    out.mkdir(parents=True, exist_ok=True)
    path = LABELS.write(table, out / "labels.parquet", extra={"fusion": rep.as_dict()})
    rpath = out / "fusion_report.json"
    rd = rep.as_dict()
    rd["unlabelled_pairs"] = [list(x) for x in rep.unlabelled[:1000]]
    rpath.write_text(json.dumps(rd, indent=1))
    stats: dict[str, Any] = {"pairs": rep.pairs, "labelled": rep.labelled, "unlabelled": len(rep.unlabelled),
                             "partially_judged": rep.partially_judged, "method": rep.method,
                             "rank_only_queries": rep.rank_only_queries}
    for g, n in sorted(rep.grade_counts.items()):
        stats[f"grade_{g}"] = n
    for j, w in rep.weights.items():
        stats[f"weight.{j}"] = round(w, 6)
    return {"outputs": {"labels": str(path), "report": str(rpath)}, "stats": stats}
