"""Stage `evaluate`: what the run's products do on judged queries.

Systems, each scored with ir-measures on the queries of `evaluation.split` that have qrels:
  bm25, dense (retrieval.dense_model), hybrid (retrieval.fusion): the first stage as configured;
  dense-finetuned, hybrid-finetuned: the same with the train_retriever model (when given);
  hybrid+trained-groupwise-rerank: the hybrid run's top `rerank.top` reranked in process
  (transformers) by the train_reranker stage's model (`reranker_model` input) with the effective
  reranker settings (with the CPU preset's group size, document length and generation limits: a
  layer of the configuration, `grouprank.reranker.config.with_preset_layer`): per query a seeded shuffle, groups of `group_size`,
  `passes` passes averaged, final = alpha·group/10 + (1−alpha)·minmax(first stage), on the first
  `evaluation.rerank_max_queries` evaluation queries by id;
  hybrid+<mode>-rerank: the same through an LLM endpoint (`rerank.backend: llm`), or an
  in-process model at `rerank.model_path` (backend transformers);
  hybrid@reranked-queries: the first stage scored on exactly the reranked queries (when a subset
  was reranked), so first stage and rerankers compare on the same queries.
Evaluation queries that are also mined training queries (same id or same normalised text) are left
out and counted, so a training query never scores its own model.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_schemas import DOCUMENTS, METRICS, QRELS, QUERIES, RUNS
from grouprank.stage import Stage, StageContext, StageResult, file, folder, table
from grouprank.text import training_queries

log = logging.getLogger(__name__)


def eval_split(cfg, queries) -> str | None:
    """The evaluated split: `evaluation.split`, or for "auto" test when the collection has it, else
    None (all judged queries)."""
    from grouprank.queries.sources import AUTO, default_split, query_splits
    if cfg.evaluation.split != AUTO:
        return cfg.evaluation.split
    d = default_split(query_splits(queries), "evaluate")
    return d[0] if d else None


def eval_queries(cfg, queries, qrels, mined=None) -> tuple[dict[str, str], Any, dict]:
    """{query_id: text} and the qrels DataFrame of the evaluation split, minus training queries."""
    import pyarrow.compute as pc
    split = eval_split(cfg, queries)
    q = queries.filter(pc.equal(queries["split"], split)) if split and "split" in queries.column_names else queries
    qr = qrels.to_pandas()
    if split and "split" in qr.columns:
        qr = qr[qr["split"] == split]
    judged = set(qr["query_id"].astype(str))
    texts = {str(i): str(t) for i, t in zip(q["query_id"].to_pylist(), q["text"].to_pylist()) if str(i) in judged}
    info = {"split": split or "all", "judged_queries": len(texts), "excluded_training_queries": 0}
    if mined is not None and cfg.evaluation.exclude_training_queries and mined.num_rows:
        m = mined
        if "decision" in m.column_names:
            m = m.filter(pc.equal(m["decision"], "kept"))
        drop = training_queries(texts, m["query_id"].to_pylist(), m["text"].to_pylist())
        texts = {i: t for i, t in texts.items() if i not in drop}
        info["excluded_training_queries"] = len(drop)
    qr = qr[qr["query_id"].astype(str).isin(set(texts))][["query_id", "doc_id", "grade"]]
    info["queries"] = len(texts)
    return texts, qr, info


def _configured_backend(cfg):
    """The reranker configured for evaluation (`rerank.backend`): (backend, label) or None."""
    from grouprank.reranker.inference import llm_backend, transformers_backend
    rc = cfg.rerank
    if rc.backend == "llm":
        if not cfg.llm.endpoints:
            log.info("evaluate: no LLM endpoint configured: reranking through an endpoint not evaluated")
            return None
        backend = llm_backend(cfg, rc, stage="evaluate")
        return backend, f"llm:{backend.client.endpoint.model}"
    if not rc.model_path:
        log.info("evaluate: rerank.backend transformers without rerank.model_path: not evaluated")
        return None
    return transformers_backend(rc, rc.model_path), f"transformers:{rc.model_path}"


def rerank_queries(texts: dict[str, str], max_queries: int | None) -> list[str]:
    """The evaluation queries that get reranked: the first `max_queries` by id (all when None)."""
    qids = sorted(texts)
    return qids[:max_queries] if max_queries else qids


def rerank_run(cfg, rc, backend, hybrid_run, texts: dict[str, str], documents, qids: list[str],
               system: str) -> tuple[Any, dict]:
    """The hybrid run's top `rc.top` of each query in `qids` reranked by `backend` (groupwise: seeded
    shuffle, groups of `rc.group_size`, `rc.passes` passes averaged, alpha·group + (1−alpha)·first
    stage). Returns (run frame: query_id, doc_id, score; the reranker's summary)."""
    import pandas as pd

    from grouprank.reranker.inference import rerank
    from grouprank.text import document_text_map
    cands: dict[str, list[tuple[str, float]]] = {}
    keep = set(qids)
    sub = hybrid_run[hybrid_run["query_id"].isin(keep)]
    for q, d, s in zip(sub["query_id"], sub["doc_id"], sub["score"]):
        cands.setdefault(str(q), []).append((str(d), float(s)))
    from grouprank.prompts.common import cut_queries
    texts = cut_queries({q: texts[q] for q in cands if q in texts}, cfg.prompts.max_query_chars, "rerank")
    res = rerank(rc.mode, cands, texts, document_text_map(documents), backend, top=rc.top, group_size=rc.group_size,
                 passes=rc.passes, alpha=rc.alpha, seed=cfg.seed,
                 max_doc_chars=rc.doc_chars or cfg.prompts.max_doc_chars,
                 window=rc.window, stride=rc.stride, system=system)
    run = pd.DataFrame(res.run, columns=["query_id", "doc_id", "score", "rank", "system"])
    info = {k: v for k, v in res.summary.items() if isinstance(v, (int, float, str, dict))}
    return run[["query_id", "doc_id", "score"]], info


@dataclass
class _Systems:
    """The runs under evaluation (in scoring order), the subset of queries a reranker covered, and
    the report and stats being filled."""
    qids: list[str]
    report: dict
    stats: dict
    runs: dict = field(default_factory=dict)
    subsets: dict = field(default_factory=dict)     # systems scored on a subset of the queries
    reranked: set = field(default_factory=set)

    def add_reranked(self, name: str, frame) -> None:
        self.runs[name] = frame
        rq = set(frame["query_id"])
        self.reranked.update(rq)
        if len(rq) < len(self.qids):  # a subset was reranked: score it, and the hybrid, on that subset only
            self.subsets[name] = rq

    def timed(self, key: str, t: float) -> None:
        self.report["timings_s"][key] = round(time.perf_counter() - t, 2)


def run(inputs: dict, cfg, ctx: StageContext) -> StageResult:
    import pyarrow as pa

    from grouprank.collections import excluded_from_config
    from grouprank.evaluation.significance import table_text

    t0 = time.perf_counter()
    ec = cfg.evaluation
    texts, qrels_df, info = eval_queries(cfg, inputs["queries"], inputs["qrels"], inputs.get("mined_queries"))
    _require_queries(cfg, texts, info)
    qids = sorted(texts)
    report: dict[str, Any] = {"collection": cfg.data.collection, **info, "measures": list(ec.measures),
                              "systems": {}, "timings_s": {}}
    excluded = excluded_from_config(cfg)
    no_rel = _queries_without_relevant(report, qrels_df, qids)
    sy = _Systems(qids, report, {"queries": len(qids), "split": info["split"],
                                 "excluded_training_queries": info["excluded_training_queries"],
                                 "queries_without_relevant": len(no_rel)})
    hybrid = _first_stage(sy, inputs, cfg, ctx, texts, excluded)
    _trained_rerank(sy, inputs, cfg, texts, hybrid)
    _configured_rerank(sy, inputs, cfg, texts, hybrid)
    if sy.reranked and len(sy.reranked) < len(qids):
        # the first stage on exactly the reranked queries, next to the rerankers
        sy.runs[f"{hybrid}@reranked-queries"] = sy.runs[hybrid][sy.runs[hybrid]["query_id"].isin(sy.reranked)]
        sy.subsets[f"{hybrid}@reranked-queries"] = sy.reranked
    mtables, rtables = _score_systems(sy, cfg, qrels_df, excluded, info["split"], hybrid)
    report["wall_s"] = round(time.perf_counter() - t0, 2)
    rpath = ctx.write_json("eval_report.json", report)
    sy.stats["wall_s"] = report["wall_s"]
    log.info("evaluate (%s, split %s):\n%s", cfg.data.collection, info["split"],
             table_text(report["systems"], report["system_queries"], report["significance"], ec.measures))
    return StageResult({"metrics": pa.concat_tables(mtables), "runs": pa.concat_tables(rtables),
                        "eval_report": rpath}, sy.stats)


def _require_queries(cfg, texts: dict, info: dict) -> None:
    if not texts:
        from grouprank.errors import UserError
        raise UserError(f"evaluate: no judged queries in split {info['split']!r} of {cfg.data.collection!r} "
                        f"(after leaving out {info['excluded_training_queries']} training queries); "
                        "set evaluation.split, or mine another split (queries.splits) so that evaluation "
                        "queries are not training queries; `grouprank evaluate --run RUN` scores run files on all "
                        "judged queries")


def _queries_without_relevant(report: dict, qrels_df, qids: list[str]) -> list[str]:
    """Evaluation queries the qrels grade all 0 (they score 0 everywhere and are averaged in)."""
    from grouprank.evaluation.runs import grade_scale, queries_without_relevant
    no_rel = queries_without_relevant(qrels_df, 1)
    report.update({"grade_scale": grade_scale(qrels_df), "relevance_threshold": 1,
                   "queries_without_relevant": len(no_rel)})
    if no_rel:
        log.warning("evaluate: %d of %d evaluation queries have no relevant document in the qrels (all grades 0): "
                    "they score 0 in every measure and are averaged in: %s", len(no_rel), len(qids),
                    ", ".join(no_rel[:10]))
    return no_rel


def _first_stage(sy: _Systems, inputs: dict, cfg, ctx: StageContext, texts: dict[str, str], excluded) -> str:
    """bm25, dense and hybrid as configured, and with the fine-tuned retriever when given; -> the
    hybrid system's name (what everything is compared with)."""
    import pyarrow as pa

    from grouprank.first_stage.hybrid import retrieve
    docs, qids = inputs["documents"], sy.qids
    qtable = pa.table({"query_id": qids, "text": [texts[q] for q in qids]})
    t = time.perf_counter()
    res = retrieve(docs, qtable, cfg, cfg.work_path, excluded=excluded, progress=ctx.progress)
    sy.runs["bm25"], sy.runs["dense"] = res.run("bm25"), res.run("dense")
    sy.runs[f"hybrid-{res.fusion}"] = res.run()
    sy.timed("first_stage", t)
    retriever_model = inputs.get("retriever_model")
    if retriever_model and cfg.evaluation.finetuned_retriever:
        t = time.perf_counter()
        rcfg = cfg.retrieval.model_copy(update={"dense_model": str(retriever_model)})
        ft = retrieve(docs, qtable, rcfg, cfg.work_path, excluded=excluded, progress=ctx.progress)
        sy.runs["dense-finetuned"], sy.runs[f"hybrid-{res.fusion}-finetuned"] = ft.run("dense"), ft.run()
        sy.timed("finetuned", t)
    return f"hybrid-{res.fusion}"


def _trained_rerank(sy: _Systems, inputs: dict, cfg, texts: dict[str, str], hybrid: str) -> None:
    """The train_reranker stage's policy, in process, with the settings it was trained for."""
    from grouprank.reranker.inference import transformers_backend
    reranker_model, ec = inputs.get("reranker_model"), cfg.evaluation
    if reranker_model:
        sy.report["trained_reranker"] = str(reranker_model)
    if not (ec.rerank != "off" and reranker_model and (Path(reranker_model) / "config.json").exists()):
        return
    rc = cfg.rerank.model_copy(update={"mode": "groupwise"})  # what the policy was trained for
    t = time.perf_counter()
    name = f"{hybrid}+trained-{rc.mode}-rerank"
    frame, rinfo = rerank_run(cfg, rc, transformers_backend(rc, reranker_model), sy.runs[hybrid], texts,
                              inputs["documents"], rerank_queries(texts, ec.rerank_max_queries),
                              name)
    sy.add_reranked(name, frame)
    rinfo["reranker"] = f"trained:{reranker_model}"
    sy.report["rerank_trained"] = rinfo
    # in process, not through an endpoint: "generations", so no one counts them as LLM calls
    sy.stats.update({"rerank_trained.generations": rinfo.get("total_calls", 0),
                     **{f"rerank_trained.{k}": rinfo.get(f"total_{k}", 0) for k in ("prompt_tokens", "failed")}})
    sy.timed("rerank_trained", t)


def _configured_rerank(sy: _Systems, inputs: dict, cfg, texts: dict[str, str], hybrid: str) -> None:
    """The reranker the configuration names (`rerank.backend`), with `evaluation.rerank: auto`."""
    cb = _configured_backend(cfg) if cfg.evaluation.rerank == "auto" else None
    if cb is None:
        return
    t = time.perf_counter()
    backend, label = cb
    rc = cfg.rerank
    name = f"{hybrid}+{rc.mode}-rerank"
    frame, rinfo = rerank_run(cfg, rc, backend, sy.runs[hybrid], texts, inputs["documents"],
                              rerank_queries(texts, cfg.evaluation.rerank_max_queries), name)
    sy.add_reranked(name, frame)
    rinfo["reranker"] = label
    sy.report["rerank"] = rinfo
    sy.stats.update({f"rerank.{k}": rinfo.get(f"total_{k}", 0) for k in ("calls", "prompt_tokens", "failed")})
    sy.timed("rerank", t)


def _score_systems(sy: _Systems, cfg, qrels_df, excluded, split: str, hybrid: str) -> tuple[list, list]:
    """ir-measures for every system (on its queries), per-query values, and the significance of each
    system against the configured first stage, paired on the queries both were scored on;
    -> (METRICS tables, RUNS tables)."""
    from grouprank.evaluation.metrics import evaluate, metrics_table
    from grouprank.evaluation.significance import compare, per_query_values
    measures, report, stats = cfg.evaluation.measures, sy.report, sy.stats
    mtables, rtables = [], []
    per_query: dict[str, dict] = {}
    report["system_queries"] = {}  # the queries each system was scored on (a reranker: a subset)
    for system, frame in sy.runs.items():
        sub = sy.subsets.get(system)
        qd = qrels_df if sub is None else qrels_df[qrels_df["query_id"].astype(str).isin(sub)]
        agg, pq_frame = evaluate(frame, qd, measures, excluded=excluded, per_query=True)
        per_query[system] = per_query_values(pq_frame, measures)
        n = len(sy.qids) if sub is None else len(sub)
        report["system_queries"][system] = n
        report["systems"][system] = {k: round(v, 5) for k, v in agg.items()}
        stats.update({f"{system}.{k}": round(v, 4) for k, v in agg.items()})
        mtables.append(metrics_table(agg, system=system, collection=cfg.data.collection, split=split, n_queries=n))
        f = frame.sort_values(["query_id", "score"], ascending=[True, False], kind="stable").copy()
        f["rank"] = f.groupby("query_id").cumcount() + 1
        f["system"] = system
        rtables.append(RUNS.from_pandas(f[["query_id", "doc_id", "rank", "score", "system"]], validate=False))
    report["significance"] = compare(per_query, hybrid, measures)
    for system, res in report["significance"]["systems"].items():
        for m, r in res.items():
            if r.get("p_ttest") is not None:
                stats[f"{system}.{m}.p_vs_{hybrid}"] = r["p_ttest"]
    return mtables, rtables


def _llm_reranker(cfg) -> bool:
    return cfg.rerank.backend == "llm" and bool(cfg.llm.endpoints)


def excluded_files(cfg) -> dict[str, str]:
    """BRIGHT's excluded ids filter this stage's runs: their file is in its cache key."""
    from grouprank.collections import excluded_files as files
    return files(cfg)


def _run_file_args(p) -> None:
    from grouprank.evaluation.runs import add_run_file_args
    add_run_file_args(p)


def _run_files(args, cfg):
    from grouprank.evaluation.runs import run_files_action
    return run_files_action(args, cfg)


STAGE = Stage(
    name="evaluate", title="evaluate", run=run, builds_models=True,
    progress_parts=lambda c: 1,  # the encodings and the reranking, in turn
    help="score the first stage, the fine-tuned retriever and reranking on judged queries (ir-measures)",
    inputs=(table("documents", DOCUMENTS), table("queries", QUERIES), table("qrels", QRELS),
            table("mined_queries", QUERIES, optional=True), folder("retriever_model", optional=True),
            folder("reranker_model", optional=True)),
    outputs=(table("metrics", METRICS), table("runs", RUNS), file("eval_report", "eval_report.json")),
    reads=excluded_files, sections=("data", "retrieval", "reranker", "rerank", "llm", "evaluation", "prompts", "seed"), uses_llm=_llm_reranker,
    timeout_s=24 * 3600,
    # `grouprank evaluate --run FILE ...` scores TREC run files instead (grouprank.evaluation.runs)
    cli_args=_run_file_args, cli_action=_run_files,
)
