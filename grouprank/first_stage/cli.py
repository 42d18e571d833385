"""`grouprank retrieve`: BM25 + dense candidates, fused and pooled, for the run's queries.

Writes under <work_dir>/retrieve/: candidates.parquet (CANDIDATES), candidates.trec (the pool as a
TREC run), run.trec (the full fused top-depth ranking), retrieval_report.json; indexes persist in
<work_dir>/indexes/ and are reused by the next run over the same corpus and settings.
"""
from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    from grouprank.cli import add_config_args
    p = subparsers.add_parser("retrieve", help="retrieve, fuse and pool candidates (BM25 + dense)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--queries", metavar="PARQUET",
                   help="a QUERIES table to retrieve for (default: <work_dir>/mine_queries/mined_queries.parquet "
                        "if present, else the collection's queries of queries.splits)")
    p.add_argument("--split", action="append", metavar="SPLIT",
                   help="collection query split(s) to use (overrides queries.splits; repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_handler)


def _handler(args) -> int:
    from grouprank.cli import config_from_args
    cfg = config_from_args(args)
    queries = collection = None
    if args.split:  # explicit splits win over a mined queries.parquet in the work dir
        from grouprank.collections import load_from_config
        collection = load_from_config(cfg)
        import pyarrow as pa
        queries = pa.concat_tables([collection.queries_for(s) for s in args.split])
    if args.queries:
        from data_schemas import QUERIES
        queries = QUERIES.read(args.queries)
    from grouprank.first_stage.hybrid import run_stage
    summary = run_stage(cfg, queries, collection=collection, show_progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    return 0
