"""`grouprank build-datasets` and `grouprank export`.

Inputs default to the stage outputs under the work dir (the first file that exists of
<work_dir>/<stage>/<name>.parquet and <work_dir>/<name>.parquet); pass paths to override.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

# input name -> (required, candidate relative paths under the work dir)
DEFAULTS: dict[str, tuple[bool, tuple[str, ...]]] = {
    "documents": (True, ("collection/documents.parquet", "documents.parquet")),
    "queries": (True, ("mine_queries/mined_queries.parquet", "mined_queries.parquet", "queries.parquet",
                       "collection/queries.parquet")),
    "candidates": (False, ("retrieve/candidates.parquet", "candidates.parquet")),
    "labels": (True, ("fuse/labels.parquet", "judge/labels.parquet", "labels.parquet")),
    "judgments": (False, ("judge/judgments.parquet", "judgments.parquet")),
    "reranker_rl": (True, ("build_datasets/reranker_rl.parquet",)),
    "reranker_sft": (True, ("build_datasets/reranker_sft.parquet",)),
    "retriever_examples": (True, ("build_datasets/retriever_examples.parquet",)),
    "qrels": (False, ("collection/qrels.parquet",)),
}

HELP = {"qrels": "human qrels, used only for the card's agreement of the fused grades with them",
        "judgments": "JUDGMENTS: teacher SFT targets (groupwise judges), judges and agreement in the card",
        "candidates": "CANDIDATES: the retrieval order of hard negatives (else the fused-label order)"}

BUILD_INPUTS = ("documents", "queries", "candidates", "labels", "judgments")
EXPORT_INPUTS = ("documents", "queries", "labels", "reranker_rl", "reranker_sft", "retriever_examples",
                 "judgments", "qrels")


def _add_inputs(p: argparse.ArgumentParser, names) -> None:
    for n in names:
        req, cands = DEFAULTS[n]
        p.add_argument(f"--{n.replace('_', '-')}", dest=n, metavar="PARQUET",
                       help=f"{HELP.get(n, n + ' table')} ({'required' if req else 'optional'}; "
                            "default: first existing of "
                            + ", ".join(f"<work_dir>/{c}" for c in cands) + ")")
        if not req:
            p.add_argument(f"--no-{n.replace('_', '-')}", dest=f"no_{n}", action="store_true",
                           help=f"do not use a {n} table even if one exists")


def register(subparsers) -> None:
    from grouprank.cli import add_config_args
    b = subparsers.add_parser("build-datasets", help="groupwise reranker (RL/SFT) and retriever examples from labels",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(b)
    _add_inputs(b, BUILD_INPUTS)
    b.set_defaults(func=_build)
    e = subparsers.add_parser("export", help="sharded Parquet, BEIR, TREC qrels and a dataset card",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(e)
    _add_inputs(e, EXPORT_INPUTS)
    e.add_argument("--out", metavar="DIR", help="export folder (default <work_dir>/export)")
    e.set_defaults(func=_export)


def _resolve(args, cfg, names) -> dict[str, Path | None]:
    from grouprank.errors import UserError
    work = cfg.work_path
    out: dict[str, Path] = {}
    for n in names:
        req, cands = DEFAULTS[n]
        if getattr(args, f"no_{n}", False):
            out[n] = None  # explicitly none (no default lookup downstream either)
            continue
        given = getattr(args, n, None)
        if given:
            p = Path(given)
            if not p.exists():
                raise UserError(f"--{n.replace('_', '-')}: file not found: {p}")
            out[n] = p
            continue
        found = next((work / c for c in cands if (work / c).exists()), None)
        if found is not None:
            out[n] = found
        elif req:
            raise UserError(f"no {n} table: pass --{n.replace('_', '-')} PARQUET (looked for "
                            + ", ".join(str(work / c) for c in cands) + ")")
    return out


def _build(args) -> int:
    from grouprank.cli import config_from_args
    from grouprank.trainsets.stage import run
    cfg = config_from_args(args)
    inputs = _resolve(args, cfg, BUILD_INPUTS)
    res = run(cfg, **inputs)
    print(json.dumps({"inputs": {k: (str(v) if v else None) for k, v in inputs.items()}, **res}, indent=2))
    return 0


def _export(args) -> int:
    from grouprank.cli import config_from_args
    from grouprank.trainsets.stage import run_export
    cfg = config_from_args(args)
    inputs = _resolve(args, cfg, EXPORT_INPUTS)
    res = run_export(cfg, out_dir=args.out, **inputs)
    print(json.dumps({"inputs": {k: (str(v) if v else None) for k, v in inputs.items()}, **res}, indent=2))
    return 0
