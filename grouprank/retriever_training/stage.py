"""Stage `train_retriever` (pipeline contract, HELPERS.md):

    run(cfg, *, retriever_examples, documents=None, queries=None, qrels=None, labels=None,
        output_dir=None, eval_queries=None, eval_qrels=None, data_source="synthetic")
        -> {"outputs": {"model", "metrics", "summary", "run_before", "run_after"}, "stats": {...}}

under `cfg.work_path / "train_retriever"` (or `output_dir`).

Inputs (Parquet paths, Arrow tables or DataFrames):
- `retriever_examples`: the build_datasets stage's RETRIEVER_EXAMPLES table, or the export's
  sentence-transformers view (`export/retriever/`, anchor/positive/negative_1..n, file or folder);
- `documents`: the corpus (needed for evaluation and re-mining);
- `queries` + `qrels`: the collection's (load stage). With qrels for `retriever.eval_split` the model
  is evaluated before and after training on those queries over the full corpus; training rows whose
  query id or (normalised) text is an evaluation query are dropped and counted — a last safety net
  behind the query-mining leakage guard. `eval_queries`/`eval_qrels` override the held-out set.
  Without qrels, `retriever.holdout_fraction` of the example queries are held out of training and
  evaluated with their positives as qrels;
- `labels`: LABELS, for the false-negative guard when re-mining (`retriever.remine_rounds` > 0).

Outputs: `model/` (the sentence-transformers model with its card; README.md names the data and the
configuration, `grouprank_training.json` the same facts), `metrics.parquet` (METRICS), runs before
and after (RUNS), `summary.json`.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

STAGE_DIR = "train_retriever"


def _table(x, tdef=None):
    from grouprank.trainsets.common import as_table
    return as_table(x, tdef)


def _norm(t: str) -> str:
    """The query-mining guard's normalisation (NFKC, casefold, punctuation and spaces collapsed)."""
    from grouprank.queries.textsim import normalize
    return normalize(str(t))


def _read_examples(x) -> tuple[pd.DataFrame, list[dict]]:
    from .data import file_digest, normalise_examples, read_examples
    if isinstance(x, (str, Path)):
        df = read_examples(x)
        return df, [{"path": str(x), "sha256": file_digest([x]), "rows": len(df)}]
    raw = x.to_pandas() if hasattr(x, "to_pandas") else x
    df = normalise_examples(raw)
    return df, [{"path": "<in-memory>", "sha256": None, "rows": len(df)}]


def _eval_set(cfg, examples: pd.DataFrame, *, documents, queries, qrels, eval_queries, eval_qrels):
    """-> (train examples, eval {query_id: text} or None, eval qrels DataFrame or None, description)."""
    from .data import holdout_split, qrels_from_examples
    rc = cfg.retriever
    if eval_qrels is not None or qrels is not None:
        if eval_qrels is not None:
            qr = _table(eval_qrels).to_pandas()
        else:
            qr = _table(qrels).to_pandas()
            if "split" in qr.columns:
                qr = qr[qr["split"] == rc.eval_split]
        qsrc = eval_queries if eval_queries is not None else queries
        if len(qr) and qsrc is not None:
            qt = _table(qsrc).to_pandas()
            ids = set(qr["query_id"].astype(str))
            texts = {str(a): str(b) for a, b in zip(qt["query_id"], qt["text"]) if str(a) in ids}
            return examples, texts, qr, f"split '{rc.eval_split}' ({len(ids)} queries with qrels)"
        log.warning("no evaluation qrels/queries for split %r: holding out example queries instead", rc.eval_split)
    if rc.holdout_fraction <= 0:
        return examples, None, None, "none"
    train, held = holdout_split(examples, rc.holdout_fraction, rc.seed)
    if held.empty:
        return examples, None, None, "none"
    texts = dict(zip(held["query_id"], held["anchor"]))
    return train, texts, qrels_from_examples(held), (f"{len(texts)} held-out example queries "
                                                     f"({rc.holdout_fraction:.0%}, their positives as qrels)")


def drop_eval_overlap(examples: pd.DataFrame, eval_texts: dict[str, str] | None) -> tuple[pd.DataFrame, int]:
    """Drop training rows whose query id or normalised text is an evaluation query (exact copies
    only: near copies are the query-mining leakage guard's job, upstream)."""
    if not eval_texts:
        return examples, 0
    ids = set(eval_texts)
    norm = {_norm(t) for t in eval_texts.values()}
    bad = examples["query_id"].isin(ids) | examples["anchor"].map(_norm).isin(norm)
    return examples[~bad].reset_index(drop=True), int(bad.sum())


def _runs_table(run: pd.DataFrame, system: str):
    from data_schemas import RUNS
    r = run.copy()
    r["rank"] = r.groupby("query_id").cumcount() + 1
    r["system"] = system
    return RUNS.from_pandas(r[["query_id", "doc_id", "rank", "score", "system"]], validate=False)


def run(cfg, **inputs: Any) -> dict:
    """Train the retriever; see the module docstring."""
    from data_schemas import DOCUMENTS, LABELS, METRICS, RUNS
    from grouprank.evaluation.metrics import metrics_table

    from .data import select_examples, to_training_frame
    from .evaluate import DenseEvaluator
    from .train import train_model, write_card

    t_start = time.perf_counter()
    rc = cfg.retriever
    out = Path(inputs.get("output_dir") or (cfg.work_path / STAGE_DIR))
    out.mkdir(parents=True, exist_ok=True)
    if inputs.get("retriever_examples") is None:
        raise TypeError("missing input: retriever_examples")
    examples, data_info = _read_examples(inputs["retriever_examples"])
    source = inputs.get("data_source", "synthetic")
    for d in data_info:
        d["source"] = source
    documents = _table(inputs.get("documents"), DOCUMENTS) if inputs.get("documents") is not None else None
    labels = _table(inputs.get("labels"), LABELS) if inputs.get("labels") is not None else None
    timings: dict[str, float] = {}
    stats: dict[str, Any] = {"examples_in": len(examples), "data_source": source}

    examples = select_examples(examples, rc.max_positives_per_query)
    train_ex, eval_texts, eval_qrels, eval_desc = _eval_set(
        cfg, examples, documents=documents, queries=inputs.get("queries"), qrels=inputs.get("qrels"),
        eval_queries=inputs.get("eval_queries"), eval_qrels=inputs.get("eval_qrels"))
    train_ex, n_overlap = drop_eval_overlap(train_ex, eval_texts)
    stats["train_rows_dropped_eval_overlap"] = n_overlap
    if n_overlap:
        log.warning("dropped %d training rows whose query is an evaluation query", n_overlap)

    evaluator = None
    if eval_texts and documents is not None:
        evaluator = DenseEvaluator(
            documents, eval_texts, eval_qrels, include_title=cfg.retrieval.include_title,
            measures=rc.eval_measures, depth=rc.eval_depth, backend=rc.eval_backend,
            max_seq_length=rc.max_seq_length, batch_size=cfg.retrieval.batch_size,
            query_prompt=cfg.retrieval.query_prompt, document_prompt=cfg.retrieval.document_prompt,
            store_root=cfg.work_path / "indexes", cache_dir=cfg.work_path / "models",
            shard_size=cfg.retrieval.shard_size)
        stats["eval_queries"] = evaluator.n_queries
    elif eval_texts:
        log.warning("no documents given: evaluation skipped")

    metrics: dict[str, dict[str, float]] = {}
    outputs: dict[str, str] = {}
    if evaluator is not None and rc.eval_before:
        t = time.perf_counter()
        run_b = evaluator.run(rc.base_model)
        from grouprank.evaluation.metrics import evaluate
        metrics["before"] = {k: float(v) for k, v in evaluate(run_b, evaluator.qrels, rc.eval_measures).items()}
        timings["eval_before_s"] = time.perf_counter() - t
        stats["eval_before_corpus_reused"] = int(evaluator.last.get("corpus_reused", False))
        outputs["run_before"] = str(RUNS.write(_runs_table(run_b, "base"), out / "run_before.parquet"))

    # --- round 0 (+ re-mining rounds)
    frame, fstats = to_training_frame(train_ex, rc.n_negatives, drop_short=rc.drop_short, seed=rc.seed)
    stats.update({f"data_{k}": v for k, v in fstats.items()})
    model_dir = out / "model"
    rounds: list[dict] = []
    t = time.perf_counter()
    res = train_model(frame, rc, model_dir, dataset_name=f"grouprank retriever_examples ({source})")
    timings["train_s"] = time.perf_counter() - t
    rounds.append({"round": 0, **res.stats()})
    for rnd in range(1, int(rc.remine_rounds) + 1):
        if documents is None:
            raise ValueError("re-mining needs the documents input")
        t = time.perf_counter()
        train_ex, rstats = _remine(cfg, res, train_ex, documents, labels, frame_negatives=fstats["n_negatives"])
        timings[f"remine_{rnd}_s"] = time.perf_counter() - t
        frame, fstats = to_training_frame(train_ex, fstats["n_negatives"], drop_short=rc.drop_short, seed=rc.seed + rnd)
        t = time.perf_counter()
        res = train_model(frame, rc, model_dir, model=res.model)
        timings[f"train_round{rnd}_s"] = time.perf_counter() - t
        rounds.append({"round": rnd, **res.stats(), **rstats, **{f"data_{k}": v for k, v in fstats.items()}})

    if evaluator is not None and rc.eval_after:
        t = time.perf_counter()
        run_a = evaluator.run(str(model_dir), st_model=res.model, fresh=True)
        from grouprank.evaluation.metrics import evaluate
        metrics["after"] = {k: float(v) for k, v in evaluate(run_a, evaluator.qrels, rc.eval_measures).items()}
        timings["eval_after_s"] = time.perf_counter() - t
        outputs["run_after"] = str(RUNS.write(_runs_table(run_a, "finetuned"), out / "run_after.parquet"))

    coll = cfg.data.collection
    if metrics:
        split = ("heldout" if inputs.get("eval_qrels") is not None else
                 rc.eval_split if inputs.get("qrels") is not None else "holdout")
        mt = [metrics_table(v, system=("base" if k == "before" else "finetuned"), collection=coll,
                            split=split, n_queries=evaluator.n_queries) for k, v in metrics.items()]
        import pyarrow as pa
        outputs["metrics"] = str(METRICS.write(pa.concat_tables(mt), out / "metrics.parquet"))

    info = {"base_model": rc.base_model, "data": data_info, "data_stats": fstats, "train": rounds[-1],
            "rounds": rounds, "eval": metrics, "eval_queries": eval_desc, "collection": coll,
            "config": {"retriever": rc.model_dump(mode="json"), "retrieval_encoder": {
                "include_title": cfg.retrieval.include_title, "max_seq_length": rc.max_seq_length,
                "eval_backend": rc.eval_backend}, "datasets": cfg.datasets.model_dump(mode="json")}}
    write_card(model_dir, info)
    outputs["model"] = str(model_dir)

    stats.update({"train_rows": fstats["rows_out"], "n_negatives": fstats["n_negatives"], "rounds": len(rounds),
                  "steps": rounds[-1]["steps"], "train_loss": rounds[-1]["train_loss"]})
    for phase, vals in metrics.items():
        for m, v in vals.items():
            stats[f"{phase}_{m}"] = round(v, 5)
    if "before" in metrics and "after" in metrics:
        for m in metrics["after"]:
            if m in metrics["before"]:
                stats[f"delta_{m}"] = round(metrics["after"][m] - metrics["before"][m], 5)
    timings["wall_s"] = time.perf_counter() - t_start
    stats.update({k: round(v, 2) for k, v in timings.items()})
    summary = {"outputs": outputs, "stats": stats, "eval": metrics, "eval_queries": eval_desc, "rounds": rounds}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    outputs["summary"] = str(out / "summary.json")
    return {"outputs": outputs, "stats": stats}


def _remine(cfg, res, train_ex: pd.DataFrame, documents, labels, frame_negatives: int):
    """One re-mining pass with the model just trained (corpus embeddings persisted in the store)."""
    from grouprank.trainsets.common import document_texts
    from grouprank.trainsets.retriever import GuardSpec

    from .evaluate import DenseEvaluator
    from .remine import remine_negatives
    rc = cfg.retriever
    ev = DenseEvaluator(documents, {}, pd.DataFrame({"query_id": [], "doc_id": [], "grade": []}),
                        include_title=cfg.retrieval.include_title, backend=rc.eval_backend,
                        max_seq_length=rc.max_seq_length, batch_size=cfg.retrieval.batch_size,
                        query_prompt=cfg.retrieval.query_prompt, document_prompt=cfg.retrieval.document_prompt,
                        store_root=cfg.work_path / "indexes", cache_dir=cfg.work_path / "models",
                        shard_size=cfg.retrieval.shard_size)
    enc = ev.encoder(str(res.model_dir), fresh=True)
    D, _ = ev.corpus_embeddings(enc, st_model=res.model)
    qids = list(dict.fromkeys(train_ex["query_id"]))
    qtext = dict(zip(train_ex["query_id"], train_ex["anchor"]))
    Q = ev._st_encode(res.model, [qtext[q] for q in qids], cfg.retrieval.query_prompt) if rc.eval_backend == "torch" \
        else enc.encode_queries([qtext[q] for q in qids])
    spec = GuardSpec.from_config(cfg.datasets)
    n = frame_negatives or spec.negatives
    return remine_negatives(train_ex, doc_ids=ev.doc_ids, doc_emb=D, query_emb=dict(zip(qids, Q)),
                            doc_texts=document_texts(documents), labels=labels, spec=spec, n_negatives=n,
                            rank_range=tuple(rc.remine_range), unjudged=rc.remine_unjudged, margin=rc.remine_margin)
