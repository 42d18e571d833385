"""`python -m flows FLOW [--config FILE] [--set KEY=VALUE ...] [--task-runner dask]`

Runs one flow in this process: with PREFECT_API_URL set it reports to that server, without it
Prefect starts an ephemeral server (on a fresh database set
PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120). FLOW: synthesize, or a stage's command
(the same names as `grouprank`'s stage commands: load, mine-queries, retrieve, judge, ...).
"""
from __future__ import annotations

import argparse
import json
import sys

def flow_names() -> list[str]:
    from grouprank.stage_list import all_stages
    return ["synthesize"] + [s.cli_name for s in all_stages().values()]


def get_flow(name: str):
    if name == "synthesize":
        from flows.synthesize import synthesize
        return synthesize
    from flows.stage_flows import FLOWS
    return FLOWS[name]


def main(argv: list[str] | None = None) -> int:
    from grouprank.config import add_config_args, config_from_args
    p = argparse.ArgumentParser(prog="python -m flows", description=__doc__.splitlines()[0])
    p.add_argument("flow", choices=flow_names())
    add_config_args(p)
    p.add_argument("--task-runner", default=None,
                   help="thread (default) | dask | tcp://HOST:PORT | ray | ray://HOST:PORT")
    p.add_argument("--json", action="store_true", help="print the whole summary as JSON")
    from grouprank.commands.collection_args import add_collection_args, collection_overrides
    add_collection_args(p)  # the same collection options as `grouprank`
    p.add_argument("--debug", action="store_true", help="show the full traceback of a configuration error")
    args = p.parse_args(argv)
    try:
        cfg = config_from_args(args, collection_overrides(args))
    except Exception as e:  # a configuration mistake: one line naming the key, the value and what is allowed
        from grouprank.cli import _is_user_error, error_line
        if args.debug or not _is_user_error(e):
            raise
        print(f"python -m flows: error: {error_line(e)}", file=sys.stderr)
        return 2
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
    report = next((s["outputs"]["eval_report"] for s in summary.get("stages", {}).values()
                   if (s.get("outputs") or {}).get("eval_report")), None)
    if report:
        print(f"evaluation: {report}")
        print(evaluation_text(report))
    return 0


def evaluation_text(eval_report: str) -> str:
    """The evaluation's systems x measures with each system's query count and its paired difference to
    the first stage (95% CI, p), from eval_report.json."""
    from pathlib import Path

    from grouprank.evaluation.significance import table_text
    rep = json.loads(Path(eval_report).read_text())
    queries = rep.get("system_queries") or {s: rep.get("queries", 0) for s in rep.get("systems", {})}
    head = f"({rep.get('collection')}, split {rep.get('split')})"
    return head + "\n" + table_text(rep.get("systems", {}), queries, rep.get("significance"), rep.get("measures", []))


if __name__ == "__main__":
    sys.exit(main())
