"""One way to name a collection, in every command and bench:

    --collection NAME                          a built-in collection (scifact, npl, ...)
    --format beir|bright|jsonl|csv|parquet|hf --path P   a user's files
    (or `data.collection` / `data.format` / `data.path` in a --config file / --set)

`add_collection_args(parser)` adds the options; `collection_overrides(args)` turns them into config
overrides (`data.*`) for the stage commands; `load_from_args(args)` loads the collection for the
commands and benches that work on it directly. The default query split is chosen from what the
collection has (`grouprank.queries.sources.default_split`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

FORMATS = ("builtin", "beir", "bright", "trec", "jsonl", "csv", "parquet", "hf")


def add_collection_args(p: argparse.ArgumentParser, *, default_collection: str | None = None,
                        quarantine: bool = True) -> None:
    g = p.add_argument_group("collection", "a built-in collection by name, or your files with --format and --path")
    g.add_argument("--collection", default=default_collection, metavar="NAME",
                   help="built-in collection name (scifact, trec_dl19_passage, cranfield, cisi, npl), or the "
                        "label of your collection with --format/--path"
                        + (f" (default {default_collection})" if default_collection else ""))
    g.add_argument("--format", choices=FORMATS, default=None,
                   help="format of the files at --path (default builtin; beir: corpus.jsonl, queries.jsonl, "
                        "qrels/<split>.tsv; bright: documents/examples files with excluded_ids; trec: a folder "
                        "with corpus.jsonl|parquet|csv, queries.* and TREC qrels (qrels.txt); jsonl/csv/parquet: "
                        "the same folder, or a corpus file)")
    g.add_argument("--path", metavar="PATH", help="folder or file of your collection (with --format)")
    g.add_argument("--data-root", help="folder holding the built-in collections (default ../shared/data)")
    if quarantine:
        g.add_argument("--quarantine", action="store_true", help="quarantine bad records instead of failing")


def resolve(args) -> tuple[str | None, str | None, str | None]:
    """(collection name, format, path) from --collection/--format/--path, checked; None where not given.
    A path given without --format is read as a BEIR folder when it looks like one."""
    from grouprank.errors import UserError
    name, fmt, path = getattr(args, "collection", None), getattr(args, "format", None), getattr(args, "path", None)
    if path and not Path(path).exists():
        raise UserError(f"--path: {path} does not exist")
    if path and fmt in (None, "builtin"):
        if fmt is None and (Path(path) / "corpus.jsonl").exists() and (Path(path) / "qrels").is_dir():
            fmt = "beir"
        else:
            raise UserError(f"--path {path}: say its format with --format "
                            f"({'|'.join(f for f in FORMATS if f != 'builtin')})")
    if fmt not in (None, "builtin") and not path:
        raise UserError(f"--format {fmt} needs --path (the folder or file of your collection)")
    if path and not name:
        name = Path(path).name.split(".")[0] or "collection"
    return name, fmt, path


def collection_overrides(args) -> dict:
    """Config overrides (`data.*`) for what was given on the command line."""
    name, fmt, path = resolve(args)
    o: dict = {}
    if name:
        o["data.collection"] = name
    if fmt:
        o["data.format"] = fmt
    if path:
        o["data.path"] = str(Path(path).resolve())
    if getattr(args, "data_root", None):
        o["data.data_root"] = args.data_root
    if getattr(args, "quarantine", False):
        o["data.quarantine"] = True
    return o


def load_from_args(args, default: str | None = None):
    """The collection named on the command line (or `default`, a built-in name)."""
    from grouprank.collections import load_collection
    from grouprank.errors import UserError
    name, fmt, path = resolve(args)
    name = name or default
    if not name:
        raise UserError("name a collection: --collection NAME, or --format FORMAT --path PATH")
    fmt = fmt or "builtin"
    return load_collection(name, format=fmt, path=path, data_root=getattr(args, "data_root", None),
                           quarantine=bool(getattr(args, "quarantine", False)), collection_name=name)


def describe(args) -> dict:
    """What names the collection, for reports."""
    name, fmt, path = resolve(args)
    return {"collection": name, "format": fmt or "builtin", "path": path}


def add_debug_arg(p) -> None:
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the full traceback of an error")


def add_out_dir_arg(p, help: str, **kw) -> None:
    """The one output option of every command: --out-dir (older names kept as hidden aliases)."""
    p.add_argument("--out-dir", dest="out_dir", help=help, **kw)
    p.add_argument("--out", "--output-dir", dest="out_dir", help=argparse.SUPPRESS)
