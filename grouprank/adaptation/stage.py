"""Stage `adapt`: the corpus-only arm on the run's collection (`grouprank adapt`).

The arm (`grouprank.adaptation.arm.CorpusArm`) reads the documents only. The collection's queries
and qrels are read after it has chosen its teacher and recipe, and only to score base, adapted and
teacher on the evaluation split (`evaluation.split`), like the evaluate stage; a corpus with no
qrels (a user's bare BEIR folder) is adapted all the same and the report says it was not scored.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pyarrow as pa

from data_schemas import ADAPTATION_EXAMPLES, DOCUMENTS, QRELS, QUERIES
from grouprank.config_reads import only
from grouprank.prompts.config import PromptConfig
from grouprank.queries.config import QueryMiningConfig
from grouprank.stage import Stage, StageContext, StageResult, file, folder, table

log = logging.getLogger(__name__)


def _examples(rows) -> pa.Table:
    cols = ["query_id", "kind", "anchor", "positive_doc_id", "positive", "negative_doc_id", "negative_1"]
    df = rows[cols].copy() if len(rows) else rows.reindex(columns=cols)
    df["teacher_margin"] = [float(x[0]) for x in rows["label"]] if len(rows) else []
    return ADAPTATION_EXAMPLES.from_pandas(df.sort_values("query_id", kind="stable").reset_index(drop=True))


def _copy_model(src: str, dst: Path) -> None:
    from grouprank.first_stage.model_files import resolve_model
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(resolve_model(src), dst)


def generator(cfg, documents: pa.Table, progress=None):
    """`generate(doc_ids)` for the arm: one `question` per document through the run's LLM client
    (queries.endpoint, else the first of llm.endpoints; the run's cache: a rerun pays nothing twice)."""
    def generate(doc_ids: list[str]) -> list[dict]:
        from grouprank.llm.from_config import llm_client
        from grouprank.queries.generation import generate_queries
        client = llm_client(cfg, cfg.queries.endpoint, who="adaptation.generated_docs", stage="adapt")
        try:
            return generate_queries(documents, doc_ids, client, ["question"], max_doc_chars=cfg.prompts.max_doc_chars,
                                    temperature=cfg.queries.temperature, seed=cfg.seed, progress=progress)
        finally:
            client.close()
    return generate


def run(inputs: dict, cfg, ctx: StageContext) -> StageResult:
    ac = cfg.adaptation
    if not ac.enabled:
        report = {"enabled": False, "note": "adaptation.enabled is off: run `grouprank adapt` (or set "
                  "adaptation.enabled: true) to adapt the student to this corpus"}
        return StageResult({"adaptation_report": ctx.write_json("adaptation_report.json", report)},
                           {"enabled": False})
    from .arm import CorpusArm
    from .config import student_of
    from .final_test import headline, judged_queries, side_by_side, test_arm
    n_steps = 6 + len(ac.recipes) + bool(ac.generated_docs)
    done = [0]

    def step(name: str) -> None:
        done[0] += 1
        if ctx.progress:
            ctx.progress(min(done[0], n_steps), n_steps)

    from grouprank.progress import LoggingProgress
    gen = generator(cfg, inputs["documents"], LoggingProgress("adapt: generate questions", None, unit="requests")) \
        if ac.generated_docs else None
    arm = CorpusArm(inputs["documents"], ctx.work_dir / "adaptation_cache", ac, student_of(cfg), seed=cfg.seed,
                    progress=lambda m: log.info("adapt: %s", m), on_step=step, generate=gen)
    res = arm.run()
    model_dir = ctx.out_dir / "adapted_model"
    _copy_model(res["model_dir"], model_dir)

    # the final test: human queries and qrels, read only now
    from grouprank.evaluation.stage import eval_split
    split = eval_split(cfg, inputs["queries"])
    qt, qrels = judged_queries(inputs["queries"], inputs["qrels"], split)
    scored = None
    if qt:
        test = test_arm(arm, res, qt, qrels)
        test.pop("signals"), test.pop("query_ids")
        scored = {"split": split, "queries": len(qt), **headline(res, test), "side_by_side": side_by_side(res, test)}
    step("test")
    report = {"enabled": True, "docs": len(arm.ids), "test": scored,
              "arm": {k: v for k, v in res.items() if k not in ("models", "model_dir")},
              "note": None if scored else "no judged queries: the adapted model is not scored"}
    stats = {"train_rows": res["train_rows"], "teacher": res["teacher"], "chosen": res["chosen"],
             **({f"test_{k}": scored[k] for k in ("base", "adapted", "teacher", "gap_closed")} if scored else {})}
    return StageResult({"adaptation_examples": _examples(arm.last_rows), "adapted_model": model_dir,
                        "adaptation_report": ctx.write_json("adaptation_report.json", report)}, stats)


def _cli_overrides(args) -> dict:
    return {"adaptation.enabled": True}


STAGE = Stage(
    name="adapt", title="adapt the retriever to the corpus", run=run, builds_models=True,
    help="corpus-only adaptation (GPL's setting): pseudo-queries from the documents, a teacher (BM25 / "
         "all-mpnet-base-v2 / MiniLM) and a recipe chosen on held-out synthetic queries, the student "
         "fine-tuned; the collection's qrels only score it",
    inputs=(table("documents", DOCUMENTS), table("queries", QUERIES), table("qrels", QRELS)),
    outputs=(table("adaptation_examples", ADAPTATION_EXAMPLES, optional=True),
             folder("adapted_model", "adapted_model", optional=True),
             file("adaptation_report", "adaptation_report.json")),
    # llm, queries.endpoint/temperature and prompts.max_doc_chars: read by adaptation.generated_docs
    sections=("adaptation", "evaluation", "retrieval", "retriever", "seed", "llm",
              only("queries", QueryMiningConfig, "endpoint", "temperature"),
              only("prompts", PromptConfig, "max_doc_chars")),
    timeout_s=12 * 3600, retries=1,
    progress_parts=None, cli_overrides=_cli_overrides,
)
