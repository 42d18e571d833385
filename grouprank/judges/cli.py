"""`grouprank judge` and `grouprank fuse-labels`.

    grouprank judge --work-dir W [--candidates W/retrieve/candidates.parquet] [--out W/judge/judgments.parquet]
                    [--documents D.parquet --queries Q.parquet] [--dry-run] [--judge ID ...]
    grouprank fuse-labels --work-dir W [--judgments W/judge/judgments.parquet] [--out W/fuse/labels.parquet]

Documents and queries come from the configured collection (`data.*`) unless given as tables.
Judges come from `judges.judges` (default: the offline local judge, which is not an LLM).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub) -> None:
    from grouprank.cli import add_config_args

    p = sub.add_parser("judge", help="judge candidate pools with the configured judges (LLM or local)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--candidates", help="CANDIDATES table (default <work_dir>/retrieve/candidates.parquet)")
    p.add_argument("--documents", help="DOCUMENTS table (default: the configured collection)")
    p.add_argument("--queries", help="QUERIES table (default: the configured collection)")
    p.add_argument("--out", help="JUDGMENTS table to write (default <work_dir>/judge/judgments.parquet)")
    p.add_argument("--judge", action="append", dest="only", metavar="ID", help="run only this judge (repeatable)")
    p.add_argument("--max-queries", type=int, help="judge only the first N queries (trials)")
    p.add_argument("--dry-run", action="store_true", help="estimate calls, prompt tokens and cost; send nothing")
    p.set_defaults(func=cmd_judge)

    f = sub.add_parser("fuse-labels", help="fuse judgments into graded relevance labels",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(f)
    f.add_argument("--judgments", help="JUDGMENTS table (default <work_dir>/judge/judgments.parquet)")
    f.add_argument("--out", help="LABELS table to write (default <work_dir>/fuse/labels.parquet)")
    f.add_argument("--method", choices=["rank", "score_mean"], help="override judges.fusion")
    f.add_argument("--judge", action="append", dest="only", metavar="ID", help="fuse only these judges")
    f.set_defaults(func=cmd_fuse)


def _pool(cfg, args):
    from data_schemas import CANDIDATES, DOCUMENTS, QUERIES
    from grouprank.errors import UserError

    from .base import JudgePool, _doc_text
    if args.candidates:
        cand_path = Path(args.candidates)
    else:  # the pipeline's layout first, then a loose file in the work dir
        cand_path = cfg.work_path / "retrieve" / "candidates.parquet"
        if not cand_path.exists() and (cfg.work_path / "candidates.parquet").exists():
            cand_path = cfg.work_path / "candidates.parquet"
    if not cand_path.exists():
        raise UserError(f"candidates table not found: {cand_path} (run `grouprank retrieve` first or pass --candidates)")
    cands = CANDIDATES.read(cand_path)
    if args.documents and args.queries:
        docs, queries = DOCUMENTS.read(args.documents), QUERIES.read(args.queries)
    else:
        from grouprank.collections import load_from_config
        coll = load_from_config(cfg)
        docs = DOCUMENTS.read(args.documents) if args.documents else coll.documents
        queries = QUERIES.read(args.queries) if args.queries else coll.queries
    qids = None
    if args.max_queries:
        seen: list[str] = []
        for q in cands.column("query_id").to_pylist():
            if q not in seen:
                seen.append(q)
        qids = seen[: args.max_queries]
    pool = JudgePool.from_tables(cands, docs, queries, max_per_query=cfg.judges.max_per_query, query_ids=qids)
    d = docs.to_pydict()
    background = {str(i): _doc_text(t, x) for i, t, x in zip(d["doc_id"], d["title"], d["text"])}
    return pool, background


def cmd_judge(args) -> int:
    from grouprank.cli import config_from_args

    from .runner import dry_run, judgments_table, run_judges
    cfg = config_from_args(args)
    if args.dry_run:
        cfg.judges.dry_run = True
    pool, background = _pool(cfg, args)
    if cfg.judges.dry_run:
        est = dry_run(cfg, pool)
        print(json.dumps(est, indent=1))
        return 0

    def progress(judge_id, done, total):
        if done == total or done % max(1, total // 10) == 0:
            print(f"[{judge_id}] {done}/{total}", file=sys.stderr, flush=True)

    rows, usage = run_judges(cfg, pool, background=background, only=args.only, progress=progress)
    from data_schemas import JUDGMENTS
    out = Path(args.out) if args.out else cfg.work_path / "judge" / "judgments.parquet"
    JUDGMENTS.write(judgments_table(rows), out, extra={"usage": usage, "config": cfg.judges.model_dump(mode="json")})
    print(json.dumps({"judgments": str(out), "rows": len(rows), "usage": usage}, indent=1, default=str))
    return 0


def cmd_fuse(args) -> int:
    from data_schemas import JUDGMENTS, LABELS
    from grouprank.cli import config_from_args

    from .fusion import fuse_labels
    cfg = config_from_args(args)
    jc = cfg.judges
    src = Path(args.judgments) if args.judgments else cfg.work_path / "judge" / "judgments.parquet"
    J = JUDGMENTS.read(src)
    weights = {s.id: s.weight for s in jc.judges}
    table, report = fuse_labels(J, method=args.method or jc.fusion, weights=weights, beta=jc.beta,
                                grade_scale=jc.grade_scale, thresholds=jc.grade_thresholds,
                                rank_only_fractions=jc.rank_only_fractions, judges=args.only,
                                return_report=True)
    out = Path(args.out) if args.out else cfg.work_path / "fuse" / "labels.parquet"
    LABELS.write(table, out, extra={"fusion": report.as_dict()})
    print(json.dumps({"labels": str(out), **report.as_dict()}, indent=1))
    return 0
