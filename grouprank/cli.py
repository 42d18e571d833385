"""The `grouprank` command.

One command per pipeline stage, generated from the stage list (`grouprank.stage_list`): it runs the
stage, and first the stages it needs unless their finished outputs are still valid (the same
resume rule as the Prefect flows). Every declared input can be fed from a file instead
(`--<input> PATH`). `run` runs the pipeline in-process; the other commands (collections, rerank)
live in `grouprank/commands/`. Heavy imports (torch, sentence-transformers, faiss) happen inside handlers so
start-up stays fast.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import json
import sys

from grouprank.config import add_config_args, config_from_args

# modules exposing register(subparsers) for the commands that are not one stage
COMMAND_MODULES = ["grouprank.commands.collections", "grouprank.commands.rerank", "grouprank.commands.llm"]


def _producer(stage) -> dict[str, str]:
    from grouprank.stage_list import wiring_of
    return {name: src for name, (src, _) in wiring_of(stage.name).items()}


def add_stage_command(sub, stage) -> None:
    made_by = _producer(stage)
    p = sub.add_parser(stage.cli_name, help=stage.help or stage.title or stage.name,
                       description=(stage.help or stage.title or stage.name) + ". Runs the stages it needs "
                       "first, unless their finished outputs are still valid.")
    add_config_args(p)
    for port in stage.inputs:
        p.add_argument(f"--{port.name.replace('_', '-')}", dest=f"input_{port.name}", metavar="PATH",
                       help=f"read `{port.name}` from this file/folder instead of the {made_by[port.name]!r} "
                            "stage's output")
    p.add_argument("--out-dir", help=f"write the outputs here (default <work_dir>/{stage.folder})")
    p.add_argument("--refresh", action="store_true", help="rerun the stage even when its outputs are up to date")
    p.add_argument("--json", action="store_true", help="print the whole run summary as JSON")
    if stage.cli_args:
        stage.cli_args(p)
    p.set_defaults(func=functools.partial(run_stage_command, stage))


def run_stage_command(stage, args) -> int:
    from pathlib import Path

    from grouprank.errors import UserError
    from grouprank.executor import run_pipeline
    cfg = config_from_args(args, stage.cli_overrides(args) if stage.cli_overrides else None)
    given = {}
    for port in stage.inputs:
        v = getattr(args, f"input_{port.name}", None)
        if v:
            if not Path(v).exists():
                raise UserError(f"--{port.name.replace('_', '-')}: {v} does not exist")
            given[port.name] = v
    summary = run_pipeline(cfg, [stage.name], overrides={stage.name: given} if given else None,
                           refresh=args.refresh, out_dirs={stage.name: args.out_dir} if args.out_dir else None,
                           log_fn=lambda m: print(m, file=sys.stderr),
                           summary_file=f"summary_{stage.name}.json")
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        rec = summary["stages"][stage.name]
        print(json.dumps({"stage": stage.name, "state": rec["state"], "outputs": rec["outputs"],
                          "stats": rec["stats"]}, indent=2, default=str))
    return 0


def _run_all(args) -> int:
    from grouprank.executor import run_pipeline
    cfg = config_from_args(args)
    stages = [s for s in (args.stages or "").split(",") if s] or None
    summary = run_pipeline(cfg, stages, refresh=args.refresh, log_fn=lambda m: print(m, file=sys.stderr))
    print(json.dumps(summary, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from grouprank.stage_list import all_stages
    parser = argparse.ArgumentParser(prog="grouprank", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the pipeline in this process, without Prefect (the main job is "
                                   "`python -m flows synthesize`)")
    add_config_args(r)
    r.add_argument("--stages", help="comma-separated target stages (default: all), with what they need")
    r.add_argument("--refresh", action="store_true", help="rerun the targets even when up to date")
    r.set_defaults(func=_run_all)
    for st in all_stages().values():
        add_stage_command(sub, st)
    for mod_name in COMMAND_MODULES:
        importlib.import_module(mod_name).register(sub)
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
