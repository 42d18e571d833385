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

from grouprank.console import quiet_progress_bars

quiet_progress_bars()  # before any library that draws bars is imported (they read their switches then)

from grouprank.commands.collection_args import add_debug_arg, add_out_dir_arg  # noqa: E402
from grouprank.config import add_config_args, config_from_args  # noqa: E402

# modules exposing register(subparsers) for the commands that are not one stage
COMMAND_MODULES = ["grouprank.commands.collections", "grouprank.commands.rerank", "grouprank.commands.llm"]


def _producer(stage) -> dict[str, str]:
    from grouprank.stage_list import wiring_of
    return {name: src for name, (src, _) in wiring_of(stage.name).items()}


def _config(args, stage=None):
    from grouprank.commands.collection_args import collection_overrides
    extra = collection_overrides(args)
    if stage is not None and stage.cli_overrides:
        extra.update(stage.cli_overrides(args))
    return config_from_args(args, extra)


def add_stage_command(sub, stage) -> None:
    from grouprank.commands.collection_args import add_collection_args
    made_by = _producer(stage)
    p = sub.add_parser(stage.cli_name, help=stage.help or stage.title or stage.name,
                       description=(stage.help or stage.title or stage.name) + ". Runs the stages it needs "
                       "first, unless their finished outputs are still valid.")
    add_config_args(p)
    add_collection_args(p)
    add_debug_arg(p)
    for port in stage.inputs:
        p.add_argument(f"--{port.name.replace('_', '-')}", dest=f"input_{port.name}", metavar="PATH",
                       help=(f"read `{port.name}` from this file/folder instead of the {made_by[port.name]!r} "
                             "stage's output") if port.name in made_by else
                       f"read `{port.name}` from this file/folder (optional){': ' + port.doc if port.doc else ''}")
    add_out_dir_arg(p, f"write the outputs here (default <work_dir>/{stage.folder})")
    p.add_argument("--refresh", action="store_true", help="rerun the stage even when its outputs are up to date")
    p.add_argument("--json", action="store_true", help="print the whole run summary as JSON")
    if stage.cli_args:
        stage.cli_args(p)
    p.set_defaults(func=functools.partial(run_stage_command, stage))


def run_stage_command(stage, args) -> int:
    from pathlib import Path

    from grouprank.errors import UserError
    from grouprank.executor import run_pipeline
    cfg = _config(args, stage)
    if stage.cli_action is not None:
        rc = stage.cli_action(args, cfg)
        if rc is not None:
            return rc
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
    cfg = _config(args)
    stages = [s for s in (args.stages or "").split(",") if s] or None
    shard_map = None
    if args.shard_workers and args.shard_workers > 1:
        from grouprank.shard_pool import process_pool
        shard_map = process_pool(args.shard_workers)
    summary = run_pipeline(cfg, stages, refresh=args.refresh, log_fn=lambda m: print(m, file=sys.stderr),
                           shard_map=shard_map)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from grouprank.stage_list import all_stages
    parser = argparse.ArgumentParser(prog="grouprank", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the pipeline in this process, without Prefect (the main job is "
                                   "`python -m flows synthesize`)")
    add_config_args(r)
    from grouprank.commands.collection_args import add_collection_args
    add_collection_args(r)
    add_debug_arg(r)
    r.add_argument("--stages", help="comma-separated target stages (default: all), with what they need")
    r.add_argument("--refresh", action="store_true", help="rerun the targets even when up to date")
    r.add_argument("--shard-workers", type=int, default=0, metavar="N",
                   help="run the shards of stages that split their work (retrieve's corpus encoding; the judge's LLM "
                        "requests with judges.shard_queries) on N "
                        "local worker processes (default: in this process, one after another)")
    r.set_defaults(func=_run_all)
    for st in all_stages().values():
        add_stage_command(sub, st)
    for mod_name in COMMAND_MODULES:
        importlib.import_module(mod_name).register(sub)
    return parser


def _setup_logging() -> None:
    """The library's INFO lines (progress with counts and ETA, long-document counts) on stderr, with
    time stamps; other libraries' at WARNING. Left alone when the caller configured logging."""
    import logging
    root = logging.getLogger()
    if root.handlers:
        return
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("grouprank").setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging()
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): nothing to say
        return 141
    except Exception as e:  # errors: one clear line; the traceback only with --debug
        if getattr(args, "debug", False):
            raise
        print(f"grouprank: error: {error_line(e)}", file=sys.stderr)
        if not _is_user_error(e):
            print("grouprank: (an unexpected error: rerun with --debug for the traceback)", file=sys.stderr)
            return 1
        return 2
    return int(rc or 0)


def _is_user_error(e: BaseException) -> bool:
    import pydantic

    from data_schemas import SchemaError
    from grouprank.errors import UserError
    return isinstance(e, (UserError, SchemaError, pydantic.ValidationError, FileNotFoundError)) or \
        (isinstance(e, ValueError) and "is not KEY=VALUE" in str(e))


def error_line(e: BaseException) -> str:
    """One line for an error: a config mistake names the key, the value given and what is allowed."""
    import pydantic
    if isinstance(e, pydantic.ValidationError):
        from grouprank.config import RunConfig
        from grouprank.config_section import describe_validation_error
        return describe_validation_error(e, RunConfig)
    if isinstance(e, ValueError) and "is not KEY=VALUE" in str(e):
        return f"--set: {e}"
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg if _is_user_error(e) else f"{type(e).__name__}: {msg}"


if __name__ == "__main__":
    sys.exit(main())
