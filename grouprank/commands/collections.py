"""`grouprank collections list|stats|export`."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    from grouprank.commands.collection_args import add_collection_args, add_debug_arg, add_out_dir_arg
    p = sub.add_parser("collections", help="list, inspect and export collections")
    csub = p.add_subparsers(dest="collections_cmd", required=True)
    ls = csub.add_parser("list", help="built-in collections and whether their files are present")
    ls.add_argument("--data-root", help="folder holding the built-in collections (default ../shared/data)")
    ls.set_defaults(func=_list)
    st = csub.add_parser("stats", help="counts of documents, queries, qrels and grades, per split",
                         description="Counts of documents, queries, qrels and grades per split, and the "
                         "default query splits the pipeline takes from it. Name the collection with "
                         "--collection NAME (built-in) or --format FORMAT --path PATH (your files).")
    st.add_argument("name", nargs="?", metavar="NAME_OR_PATH",
                    help="built-in collection name, or (with --format) the path: same as --collection / --path")
    add_collection_args(st)
    add_debug_arg(st)
    st.add_argument("--json", action="store_true", help="print the counts as JSON")
    st.set_defaults(func=_stats)
    ex = csub.add_parser("export", help="validate and write documents/queries/qrels as Parquet")
    ex.add_argument("name", nargs="?", metavar="NAME_OR_PATH",
                    help="built-in collection name, or (with --format) the path: same as --collection / --path")
    add_collection_args(ex)
    add_debug_arg(ex)
    add_out_dir_arg(ex, "folder the Parquet files are written to (required)")
    ex.set_defaults(func=_export)


def _list(args) -> int:
    from grouprank.collections.builtin import BUILTIN
    from grouprank.paths import default_data_root
    from pathlib import Path
    root = Path(args.data_root) if args.data_root else default_data_root()
    for n in BUILTIN:
        print(f"{n:20s} {'present' if (root / n).is_dir() else 'missing'}  {root / n}")
    return 0


def _load(args):
    from grouprank.commands.collection_args import load_from_args
    if args.name:  # the positional: a built-in name, or the path when a format is given
        if args.format not in (None, "builtin") and not args.path:
            args.path = args.name
        elif not args.collection:
            args.collection = args.name
    return load_from_args(args)


def _stats(args) -> int:
    from grouprank.queries.config import QueryMiningConfig
    from grouprank.queries.sources import AUTO, auto_holdout_applies, default_split, query_splits
    c = _load(args)
    s = c.stats()
    have = query_splits(c.queries)
    s["default_splits"] = {"mine": default_split(have, "mine"), "guard": default_split(have, "guard"),
                           "evaluate": default_split(have, "evaluate") or "all judged queries"}
    if auto_holdout_applies([AUTO], have):  # no train split: a held-out share is the evaluation set
        share = f"{QueryMiningConfig().auto_holdout_fraction:.0%}"
        s["default_splits"].update({"mine": f"{have} minus a seeded {share} held out",
                                    "guard": f"the held-out {share}", "evaluate": f"the held-out {share}"})
    if c.excluded:
        s["excluded_queries"] = sum(1 for v in c.excluded.values() if v)
        s["excluded_ids"] = sum(len(v) for v in c.excluded.values())
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        print(f"{s['collection']}: {s['documents']:,} documents, {s['queries']:,} queries "
              f"({s['judged_queries']:,} judged), {s['qrels']:,} qrels, grades {s['grades']}")
        for sp, b in s["splits"].items():
            print(f"  {sp}: {b['queries']:,} queries ({b['judged_queries']:,} judged), {b['qrels']:,} qrels, grades {b['grades']}")
        d = s["default_splits"]
        print(f"  default splits: mined {d['mine']}, leakage guard {d['guard']}, evaluated {d['evaluate']}")
        if s.get("excluded_queries"):
            print(f"  excluded ids (removed from every run): {s['excluded_ids']:,} for {s['excluded_queries']:,} queries")
        if s["quarantined"]:
            print(f"  quarantined records: {s['quarantined']}")
    return 0


def _export(args) -> int:
    from grouprank.collections.export import export_collection
    from grouprank.errors import UserError
    if not args.out_dir:
        raise UserError("collections export: say where with --out-dir DIR")
    c = _load(args)
    paths = export_collection(c, args.out_dir)
    for k, v in paths.items():
        print(f"{k}: {v}")
    return 0
