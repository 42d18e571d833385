"""The `grouprank` command.

Each stage owns a light `cli.py` exposing `register(subparsers)`; heavy imports
(torch, sentence-transformers, faiss) happen inside the handlers so start-up stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> module exposing register(subparsers). Order = order in --help.
STAGE_CLIS = [
    "grouprank.collections.cli",
    "grouprank.queries.cli",
    "grouprank.first_stage.cli",
    "grouprank.judges.cli",
    "grouprank.trainsets.cli",
    "grouprank.reranker.cli",
    "grouprank.retriever_training.cli",
    "grouprank.evaluation.cli",
    "grouprank.pipeline_cli",
]


def add_config_args(p: argparse.ArgumentParser) -> None:
    """Every command builds its RunConfig the same way: --config FILE plus --set KEY=VALUE."""
    p.add_argument("--config", help="run configuration (YAML or JSON)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set retrieval.depth=100 (repeatable)")
    p.add_argument("--work-dir", help="shortcut for --set work_dir=PATH")


def config_from_args(args: argparse.Namespace):
    from grouprank.config import RunConfig, parse_override
    overrides = dict(parse_override(s) for s in getattr(args, "overrides", []) or [])
    if getattr(args, "work_dir", None):
        overrides["work_dir"] = args.work_dir
    return RunConfig.load(getattr(args, "config", None), overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grouprank", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for mod_name in STAGE_CLIS:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name == mod_name:  # stage not built yet in this checkout
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # user-facing errors: one clear line, no deep traceback
        from data_schemas import SchemaError
        from grouprank.errors import UserError
        if isinstance(e, (UserError, SchemaError)):
            print(f"grouprank: error: {e}", file=sys.stderr)
            return 2
        raise
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
