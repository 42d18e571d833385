"""`grouprank mine-queries`: mine existing queries (and generate new ones with an LLM endpoint),
then leakage guard, round-trip filter and dedup; writes <work_dir>/mine_queries/mined_queries.parquet."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    from grouprank.cli import add_config_args
    p = sub.add_parser("mine-queries", help="mine / generate queries with dedup, round-trip filter, leakage guard",
                       description=__doc__)
    add_config_args(p)
    p.add_argument("--split", action="append", dest="splits", metavar="SPLIT",
                   help="collection split to mine (repeatable; default: queries.splits)")
    p.add_argument("--file", action="append", dest="files", metavar="PATH",
                   help="query file (jsonl/csv/tsv/parquet) or HF dataset dir to mine (repeatable)")
    p.add_argument("--id-column", default="query_id", help="id column of --file/--eval-file (default query_id)")
    p.add_argument("--text-column", default="text", help="text column of --file/--eval-file (default text)")
    p.add_argument("--eval-split", action="append", dest="eval_splits", metavar="SPLIT",
                   help="collection split used as evaluation set (repeatable; default: queries.leakage_eval_splits)")
    p.add_argument("--eval-file", action="append", dest="eval_files", metavar="PATH",
                   help="evaluation query file for the leakage guard (repeatable)")
    p.add_argument("--no-eval", action="store_true", help="no leakage guard (no evaluation sets)")
    p.add_argument("--generate", action="store_true", help="also generate queries (needs llm.endpoints)")
    p.add_argument("--docs", type=int, help="documents to sample for generation (queries.generate_docs)")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=_run)


def _overrides(args) -> dict:
    o: dict = {}
    if args.splits:
        o["queries.splits"] = args.splits
    src = lambda path, split: {"path": path, "id_column": args.id_column, "text_column": args.text_column,  # noqa: E731
                               "split": split}
    if args.files:
        o["queries.files"] = [src(f, "train") for f in args.files]
    if args.eval_splits:
        o["queries.leakage_eval_splits"] = args.eval_splits
    if args.eval_files:
        o["queries.eval_files"] = [src(f, "eval") for f in args.eval_files]
    if args.no_eval:
        o["queries.leakage_eval_splits"] = []
        o["queries.eval_files"] = []
    if args.generate:
        o["queries.generate"] = True
    if args.docs is not None:
        o["queries.generate_docs"] = args.docs
    return o


def _run(args) -> int:
    from grouprank.cli import config_from_args
    from grouprank.collections import load_from_config
    from .stage import run_tables
    cfg = config_from_args(args)
    for k, v in _overrides(args).items():  # validated on assignment (validate_assignment=True)
        setattr(cfg.queries, k.split(".", 1)[1], v)
    coll = load_from_config(cfg)
    res = run_tables(cfg, coll.documents, coll.queries, coll.qrels, collection=coll.name)
    with open(res["outputs"]["report"]) as f:
        report = json.load(f)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    s = res["stats"]
    print(f"mined {s['total']} queries, kept {s['kept']} -> {res['outputs']['mined_queries']}")
    for k, v in sorted(s.items()):
        if k.startswith(("decision.", "leakage.", "roundtrip.")):
            print(f"  {k}: {v}")
    for w in report.get("warnings", []):
        print(f"  warning: {w}")
    return 0
