"""`grouprank run`: the main job end to end on the configured collection."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    from grouprank.cli import add_config_args
    p = sub.add_parser("run", help="run the pipeline end to end (default: SciFact, offline local judge)")
    add_config_args(p)
    p.add_argument("--no-prefect", action="store_true", help="run the stages in-process without Prefect")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from grouprank.cli import config_from_args
    from grouprank.pipeline import run_pipeline
    cfg = config_from_args(args)
    summary = run_pipeline(cfg)
    print(json.dumps(summary, indent=2, default=str))
    return 0
