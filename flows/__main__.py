"""`python -m flows FLOW [--config FILE] [--set KEY=VALUE ...] [--task-runner dask]`

Runs one flow in this process: with PREFECT_API_URL set it reports to that server, without it
Prefect starts an ephemeral server (on a fresh database set
PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120). FLOW: synthesize, mine-queries, retrieve,
judge, fuse-labels, build-datasets, export, train-retriever, train-reranker, evaluate.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys

FLOWS = {
    "synthesize": ("flows.synthesize", "synthesize"),
    "mine-queries": ("flows.mine_queries", "mine_queries_flow"),
    "retrieve": ("flows.retrieve", "retrieve_flow"),
    "judge": ("flows.judge", "judge_flow"),
    "fuse-labels": ("flows.fuse", "fuse_flow"),
    "build-datasets": ("flows.build_datasets", "build_datasets_flow"),
    "export": ("flows.export", "export_flow"),
    "train-retriever": ("flows.train_retriever", "train_retriever_flow"),
    "train-reranker": ("flows.train_reranker", "train_reranker_flow"),
    "evaluate": ("flows.evaluate", "evaluate_flow"),
}


def get_flow(name: str):
    mod, attr = FLOWS[name]
    return getattr(importlib.import_module(mod), attr)


def main(argv: list[str] | None = None) -> int:
    from grouprank.cli import add_config_args, config_from_args
    p = argparse.ArgumentParser(prog="python -m flows", description=__doc__.splitlines()[0])
    p.add_argument("flow", choices=sorted(FLOWS))
    add_config_args(p)
    p.add_argument("--task-runner", default=None,
                   help="thread (default) | dask | tcp://HOST:PORT | ray | ray://HOST:PORT")
    p.add_argument("--json", action="store_true", help="print the whole summary as JSON")
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    f = get_flow(args.flow)
    if args.task_runner:
        from flows.runners import make_task_runner
        f = f.with_options(task_runner=make_task_runner(args.task_runner))
    summary = f(config=cfg)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    print(f"run summary: {summary['summary_path']}")
    if summary.get("exports"):
        print(f"Parquet exports: {summary['exports']}")
    ev = (summary.get("stages", {}).get("evaluate") or {})
    if ev.get("outputs", {}).get("report"):
        print(f"evaluation: {ev['outputs']['report']}")
        for k, v in sorted((ev.get("stats") or {}).items()):
            if k.endswith(".nDCG@10"):
                print(f"  nDCG@10 {k[:-len('.nDCG@10')]:40s} {v:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
