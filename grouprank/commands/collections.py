"""`grouprank collections list|stats|export`."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("collections", help="list, inspect and export collections")
    csub = p.add_subparsers(dest="collections_cmd", required=True)
    ls = csub.add_parser("list", help="built-in collections and whether their files are present")
    ls.add_argument("--data-root")
    ls.set_defaults(func=_list)
    st = csub.add_parser("stats", help="counts of documents, queries, qrels and grades")
    st.add_argument("name")
    st.add_argument("--format", default="builtin", help="builtin|beir|bright|jsonl|csv|parquet|hf")
    st.add_argument("--data-root")
    st.add_argument("--quarantine", action="store_true", help="quarantine bad records instead of failing")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_stats)
    ex = csub.add_parser("export", help="validate and write documents/queries/qrels as Parquet")
    ex.add_argument("name")
    ex.add_argument("--format", default="builtin")
    ex.add_argument("--data-root")
    ex.add_argument("--quarantine", action="store_true")
    ex.add_argument("--out", required=True)
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
    from grouprank.collections import load_collection
    fmt = args.format
    return load_collection(args.name, format=fmt, path=None if fmt == "builtin" else args.name,
                           data_root=args.data_root, quarantine=args.quarantine)


def _stats(args) -> int:
    s = _load(args).stats()
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        print(f"{s['collection']}: {s['documents']:,} documents, {s['queries']:,} queries "
              f"({s['judged_queries']:,} judged), {s['qrels']:,} qrels, grades {s['grades']}")
        for sp, b in s["splits"].items():
            print(f"  {sp}: {b['queries']:,} queries ({b['judged_queries']:,} judged), {b['qrels']:,} qrels, grades {b['grades']}")
        if s["quarantined"]:
            print(f"  quarantined records: {s['quarantined']}")
    return 0


def _export(args) -> int:
    from grouprank.collections.export import export_collection
    c = _load(args)
    paths = export_collection(c, args.out)
    for k, v in paths.items():
        print(f"{k}: {v}")
    return 0
