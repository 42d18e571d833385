"""Stage `load`: the configured collection (built-in or a user's files) as validated tables."""
from __future__ import annotations


from data_schemas import DOCUMENTS, QRELS, QUARANTINE, QUERIES
from grouprank.stage import Stage, StageContext, StageResult, file, table


def source_files(cfg) -> dict[str, str]:
    from . import source_files as files
    return files(cfg)


def run(inputs: dict, cfg, ctx: StageContext) -> StageResult:
    from . import load_from_config
    c = load_from_config(cfg)
    summary = ctx.write_json("collection_summary.json", c.stats())
    outputs = {"documents": c.documents, "queries": c.queries, "qrels": c.qrels, "collection_summary": summary}
    if c.quarantine.num_rows:
        outputs["quarantine"] = c.quarantine
    stats = {k: v for k, v in c.stats().items() if k not in ("splits", "grades")}
    return StageResult(outputs, stats)


STAGE = Stage(
    name="load", title="load collection", run=run, dirname="collection",
    help="load the collection (built-in or your files) as validated documents, queries and qrels tables",
    outputs=(table("documents", DOCUMENTS), table("queries", QUERIES), table("qrels", QRELS),
             table("quarantine", QUARANTINE, optional=True), file("collection_summary", "collection_summary.json")),
    sections=("data",), timeout_s=7200, reads=source_files,
)
