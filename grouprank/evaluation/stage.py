"""Stage `evaluate`: what the run's products do on judged queries.

Systems, each scored with ir-measures on the queries of `evaluation.split` that have qrels:
  bm25, dense (retrieval.dense_model), hybrid (retrieval.fusion): the first stage as configured;
  dense-finetuned, hybrid-finetuned: the same with the train_retriever model (when given);
  hybrid+<mode>-rerank: the hybrid run's top `reranker.top` reranked (GroupRank groupwise by
  default) through an LLM endpoint, or an in-process model at `reranker.model_path`.
Evaluation queries that are also mined training queries (same id or same normalised text) are left
out and counted, so a training query never scores its own model.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from data_schemas import DOCUMENTS, METRICS, QRELS, QUERIES, RUNS
from grouprank.stage import Stage, StageContext, StageResult, file, folder, table
from grouprank.text import normalize_query

log = logging.getLogger(__name__)


def eval_queries(cfg, queries, qrels, mined=None) -> tuple[dict[str, str], Any, dict]:
    """{query_id: text} and the qrels DataFrame of the evaluation split, minus training queries."""
    import pyarrow.compute as pc
    ec = cfg.evaluation
    q = queries.filter(pc.equal(queries["split"], ec.split)) if "split" in queries.column_names else queries
    qr = qrels.to_pandas()
    if "split" in qr.columns:
        qr = qr[qr["split"] == ec.split]
    judged = set(qr["query_id"].astype(str))
    texts = {str(i): str(t) for i, t in zip(q["query_id"].to_pylist(), q["text"].to_pylist()) if str(i) in judged}
    info = {"split": ec.split, "judged_queries": len(texts), "excluded_training_queries": 0}
    if mined is not None and ec.exclude_training_queries and mined.num_rows:
        m = mined
        if "decision" in m.column_names:
            m = m.filter(pc.equal(m["decision"], "kept"))
        ids = set(map(str, m["query_id"].to_pylist()))
        norm = {normalize_query(t) for t in m["text"].to_pylist()}
        drop = {i for i, t in texts.items() if i in ids or normalize_query(t) in norm}
        texts = {i: t for i, t in texts.items() if i not in drop}
        info["excluded_training_queries"] = len(drop)
    qr = qr[qr["query_id"].astype(str).isin(set(texts))][["query_id", "doc_id", "grade"]]
    info["queries"] = len(texts)
    return texts, qr, info


def _rerank(cfg, hybrid_run, texts: dict[str, str], documents) -> tuple[Any, dict] | None:
    """The hybrid run reranked by the configured reranker, or None (with the reason logged)."""
    import pandas as pd

    from grouprank.reranker.inference import LLMBackend, TransformersBackend, rerank
    from grouprank.text import document_text_map
    rc, ec = cfg.reranker, cfg.evaluation
    if ec.rerank == "off":
        return None
    if rc.backend == "llm":
        if not cfg.llm.endpoints:
            log.info("evaluate: no LLM endpoint configured: reranking not evaluated")
            return None
        ep = cfg.endpoint(rc.endpoint) if rc.endpoint else cfg.llm.endpoints[0]
        cache = cfg.llm.cache_path or str(cfg.work_path / "llm_cache.sqlite")
        backend = LLMBackend(endpoint=ep, cache_path=cache, temperature=rc.infer_temperature,
                             top_p=rc.infer_top_p, max_tokens=rc.infer_max_tokens, stage="evaluate")
        name = f"llm:{ep.model}"
    else:
        if not rc.model_path:
            log.info("evaluate: reranker.backend transformers without reranker.model_path: not evaluated")
            return None
        backend = TransformersBackend.from_path(rc.model_path, max_new_tokens=rc.infer_max_tokens,
                                                temperature=rc.infer_temperature, top_p=rc.infer_top_p)
        name = f"transformers:{rc.model_path}"
    qids = sorted(texts)[: ec.rerank_max_queries] if ec.rerank_max_queries else sorted(texts)
    cands: dict[str, list[tuple[str, float]]] = {}
    sub = hybrid_run[hybrid_run["query_id"].isin(set(qids))]
    for q, d, s in zip(sub["query_id"], sub["doc_id"], sub["score"]):
        cands.setdefault(str(q), []).append((str(d), float(s)))
    res = rerank(rc.mode, cands, texts, document_text_map(documents), backend, top=rc.top, group_size=rc.group_size,
                 passes=rc.passes, alpha=rc.alpha, seed=cfg.seed, max_doc_chars=cfg.prompts.max_doc_chars,
                 window=rc.window, stride=rc.stride, system=f"hybrid+{rc.mode}-rerank")
    run = pd.DataFrame(res.run, columns=["query_id", "doc_id", "score", "rank", "system"])
    info = {k: v for k, v in res.summary.items() if isinstance(v, (int, float, str, dict))}
    info["reranker"] = name
    return run[["query_id", "doc_id", "score"]], info


def run(inputs: dict, cfg, ctx: StageContext) -> StageResult:
    import pandas as pd
    import pyarrow as pa

    from grouprank.errors import UserError
    from grouprank.evaluation.metrics import evaluate, metrics_table
    from grouprank.first_stage.hybrid import retrieve

    t0 = time.perf_counter()
    ec = cfg.evaluation
    docs, qs, qr = inputs["documents"], inputs["queries"], inputs["qrels"]
    retriever_model, reranker_model = inputs.get("retriever_model"), inputs.get("reranker_model")
    texts, qrels_df, info = eval_queries(cfg, qs, qr, inputs.get("mined_queries"))
    report: dict[str, Any] = {"collection": cfg.data.collection, **info, "measures": list(ec.measures),
                              "systems": {}, "timings_s": {}}
    if not texts:
        raise UserError(f"evaluate: no judged queries in split {ec.split!r} of {cfg.data.collection!r} "
                        f"(after leaving out {info['excluded_training_queries']} training queries); "
                        "set evaluation.split")
    qids = sorted(texts)
    qtable = pa.table({"query_id": qids, "text": [texts[q] for q in qids]})
    runs: dict[str, pd.DataFrame] = {}
    subsets: dict[str, set] = {}  # systems scored on a subset of the queries

    t = time.perf_counter()
    res = retrieve(docs, qtable, cfg, cfg.work_path)
    runs["bm25"], runs["dense"] = res.run("bm25"), res.run("dense")
    runs[f"hybrid-{res.fusion}"] = res.run()
    report["timings_s"]["first_stage"] = round(time.perf_counter() - t, 2)

    if retriever_model and ec.finetuned_retriever:
        t = time.perf_counter()
        rcfg = cfg.retrieval.model_copy(update={"dense_model": str(retriever_model)})
        ft = retrieve(docs, qtable, rcfg, cfg.work_path)
        runs["dense-finetuned"], runs[f"hybrid-{res.fusion}-finetuned"] = ft.run("dense"), ft.run()
        report["timings_s"]["finetuned"] = round(time.perf_counter() - t, 2)
    if reranker_model:
        report["trained_reranker"] = str(reranker_model)

    t = time.perf_counter()
    rr = _rerank(cfg, runs[f"hybrid-{res.fusion}"], texts, docs)
    if rr is not None:
        name = f"hybrid-{res.fusion}+{cfg.reranker.mode}-rerank"
        runs[name] = rr[0]
        rq = set(rr[0]["query_id"])
        if len(rq) < len(qids):  # a subset was reranked: score it, and the hybrid, on that subset only
            subsets[name] = rq
            hyb = runs[f"hybrid-{res.fusion}"]
            runs[f"hybrid-{res.fusion}@reranked-queries"] = hyb[hyb["query_id"].isin(rq)]
            subsets[f"hybrid-{res.fusion}@reranked-queries"] = rq
        report["rerank"] = rr[1]
        stats_rr = {f"rerank.{k}": rr[1].get(f"total_{k}", 0) for k in ("calls", "prompt_tokens", "failed")}
        report["timings_s"]["rerank"] = round(time.perf_counter() - t, 2)

    stats: dict[str, Any] = {"queries": len(qids), "excluded_training_queries": info["excluded_training_queries"]}
    if rr is not None:
        stats.update(stats_rr)
    mtables, rtables = [], []
    for system, frame in runs.items():
        sub = subsets.get(system)
        qd = qrels_df if sub is None else qrels_df[qrels_df["query_id"].astype(str).isin(sub)]
        agg = evaluate(frame, qd, ec.measures)
        report["systems"][system] = {k: round(v, 5) for k, v in agg.items()}
        stats.update({f"{system}.{k}": round(v, 4) for k, v in agg.items()})
        mtables.append(metrics_table(agg, system=system, collection=cfg.data.collection, split=ec.split,
                                     n_queries=len(qids) if sub is None else len(sub)))
        f = frame.sort_values(["query_id", "score"], ascending=[True, False], kind="stable").copy()
        f["rank"] = f.groupby("query_id").cumcount() + 1
        f["system"] = system
        rtables.append(RUNS.from_pandas(f[["query_id", "doc_id", "rank", "score", "system"]], validate=False))
    report["wall_s"] = round(time.perf_counter() - t0, 2)
    rpath = ctx.write_json("eval_report.json", report)
    stats["wall_s"] = report["wall_s"]
    for system, vals in report["systems"].items():
        log.info("evaluate %s: %s", system, ", ".join(f"{k} {v:.4f}" for k, v in vals.items()))
    return StageResult({"metrics": pa.concat_tables(mtables), "runs": pa.concat_tables(rtables),
                        "eval_report": rpath}, stats)


def _llm_reranker(cfg) -> bool:
    return cfg.reranker.backend == "llm" and bool(cfg.llm.endpoints)


STAGE = Stage(
    name="evaluate", title="evaluate", run=run,
    help="score the first stage, the fine-tuned retriever and reranking on judged queries (ir-measures)",
    inputs=(table("documents", DOCUMENTS), table("queries", QUERIES), table("qrels", QRELS),
            table("mined_queries", QUERIES, optional=True), folder("retriever_model", optional=True),
            folder("reranker_model", optional=True)),
    outputs=(table("metrics", METRICS), table("runs", RUNS), file("eval_report", "eval_report.json")),
    sections=("data", "retrieval", "reranker", "llm", "evaluation", "prompts", "seed"), uses_llm=_llm_reranker,
    timeout_s=24 * 3600,
)
