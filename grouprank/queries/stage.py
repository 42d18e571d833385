"""Stage `mine_queries`: existing and generated queries, filtered (see `mine`).

`mined_queries` is a QUERIES table holding every query with its decision (downstream stages use
decision == "kept"); its Parquet metadata carries the config hash and the report.
"""
from __future__ import annotations

from typing import Any

from data_schemas import DOCUMENTS, QRELS, QUERIES
from grouprank.stage import Stage, StageContext, StageResult, TableOut, file, table


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = v
    return out


def stats_of(report: dict) -> dict[str, Any]:
    """The plain-number summary (Prefect artifacts / run summary)."""
    f = report.get("filters", {})
    rt = f.get("roundtrip", {})
    lk = f.get("leakage", {})
    s: dict[str, Any] = {"total": report.get("total", 0), "kept": report.get("kept", 0),
                         "existing": report.get("existing", 0)}
    for k, v in report.get("decisions", {}).items():
        s[f"decision.{k}"] = v
    s["leakage.eval_queries"] = lk.get("eval_queries", 0)
    for k, v in lk.get("by_via", {}).items():
        s[f"leakage.via.{k}"] = v
    if rt.get("keep_rate") is not None:
        s["roundtrip.keep_rate"] = rt["keep_rate"]
        s["roundtrip.k"] = rt["k"]
    gen = report.get("generation")
    if gen:
        s.update({f"generation.{k}": v for k, v in _flat(gen).items() if isinstance(v, (int, float, str))})
    s["wall_s"] = report.get("wall_s", 0.0)
    return s


def _untimed(x):
    if isinstance(x, dict):
        return {k: _untimed(v) for k, v in x.items() if k not in ("wall_s", "timings_s")}
    return [_untimed(v) for v in x] if isinstance(x, list) else x


def run(inputs: dict, cfg, ctx: StageContext) -> StageResult:
    from .mine import mine_queries
    from grouprank.progress import LoggingProgress
    table, report = mine_queries(cfg, inputs["documents"], inputs["queries"], inputs.get("qrels"),
                                 progress=LoggingProgress("generate queries", ctx.progress, unit="requests"))
    rpath = ctx.write_json("mine_queries_report.json", report)
    # the table's metadata holds the report without its timings: the same input gives the same bytes
    # (the timings are in mine_queries_report.json and the stats)
    extra = {"config_hash": cfg.section_hash("queries", "retrieval", "llm"), "report": _untimed(report)}
    return StageResult({"mined_queries": TableOut(table, extra), "mine_report": rpath}, stats_of(report))


def _cli_args(p) -> None:
    p.add_argument("--split", action="append", dest="splits", metavar="SPLIT",
                   help="existing query split to mine (repeatable; default queries.splits)")
    p.add_argument("--file", action="append", dest="files", metavar="PATH",
                   help="query file (JSONL/CSV/TSV/Parquet) or saved HF dataset to mine (repeatable)")
    p.add_argument("--id-column", default="query_id", help="id column of --file/--eval-file (default query_id)")
    p.add_argument("--text-column", default="text", help="text column of --file/--eval-file (default text)")
    p.add_argument("--eval-split", action="append", dest="eval_splits", metavar="SPLIT",
                   help="evaluation split for the leakage guard (repeatable; default queries.leakage_eval_splits)")
    p.add_argument("--eval-file", action="append", dest="eval_files", metavar="PATH",
                   help="evaluation query file for the leakage guard (repeatable)")
    p.add_argument("--no-eval", action="store_true", help="no leakage guard (no evaluation sets)")
    p.add_argument("--generate", action="store_true", help="also generate queries (needs llm.endpoints)")
    p.add_argument("--docs", type=int, help="documents to sample for generation (queries.generate_docs)")


def _cli_overrides(args) -> dict:
    o: dict = {}
    if args.splits:
        o["queries.splits"] = args.splits
    src = lambda path, split: {"path": path, "id_column": args.id_column, "text_column": args.text_column,  # noqa: E731
                               "split": split}
    if args.files:
        o["queries.files"] = [src(f, "train") for f in args.files]
    if args.eval_splits:
        o["queries.leakage_eval_splits"] = args.eval_splits
    if args.eval_files:
        o["queries.eval_files"] = [src(f, "eval") for f in args.eval_files]
    if args.no_eval:
        o["queries.leakage_eval_splits"] = []
        o["queries.eval_files"] = []
    if args.generate:
        o["queries.generate"] = True
    if args.docs is not None:
        o["queries.generate_docs"] = args.docs
    return o


STAGE = Stage(
    name="mine_queries", title="mine queries", run=run, builds_models=True,
    progress_parts=lambda c: 1,  # query generation (or the encodings)
    help="mine / generate queries with dedup, round-trip filter, leakage guard",
    inputs=(table("documents", DOCUMENTS), table("queries", QUERIES), table("qrels", QRELS, optional=True)),
    outputs=(table("mined_queries", QUERIES), file("mine_report", "mine_queries_report.json")),
    # the round-trip filter uses the hybrid retriever: `retrieval` is in its key
    sections=("data", "queries", "retrieval", "llm", "prompts", "seed"), uses_llm=lambda c: bool(c.queries.generate),
    timeout_s=12 * 3600, retries=3, cli_args=_cli_args, cli_overrides=_cli_overrides,
)
