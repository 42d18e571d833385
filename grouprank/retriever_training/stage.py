"""Stage `train_retriever`: contrastive fine-tuning of the dense retriever on the retriever examples
(an ordinary stage: `run(inputs, cfg, ctx)`, its files in the context's folder).

Inputs:
- `retriever_examples`: the build_datasets stage's RETRIEVER_EXAMPLES table, or the export's
  sentence-transformers view (`export/retriever/`, anchor/positive/negative_1..n, file or folder);
- `documents`: the corpus (needed for evaluation and re-mining);
- `queries` + `qrels`: the collection's (load stage). With qrels for `retriever.eval_split` the model
  is evaluated before and after training on those queries over the full corpus; training rows whose
  query id or (normalised) text is an evaluation query are dropped and counted — a last safety net
  behind the query-mining leakage guard. The optional ports `eval_queries`/`eval_qrels` (from files:
  `grouprank train-retriever --eval-queries F --eval-qrels F`) replace that evaluation set.
  Without qrels, `retriever.holdout_fraction` of the example queries are held out of training and
  evaluated with their positives as qrels;
- `labels`: LABELS, for the false-negative guard when re-mining (`retriever.remine_rounds` > 0).

Outputs: `retriever_model` (the sentence-transformers model with its card; README.md names the data
and the configuration, `grouprank_training.json` the same facts), `retriever_metrics` (METRICS),
`run_before` / `run_after` (RUNS), `retriever_summary`.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from data_schemas import DOCUMENTS, LABELS, METRICS, QRELS, QUERIES, RETRIEVER_EXAMPLES, RUNS
from grouprank.stage import Stage, StageContext, StageResult, file, folder, table

log = logging.getLogger(__name__)


def _table(x, tdef=None):
    from grouprank.trainsets.common import as_table
    return as_table(x, tdef)


def _norm(t: str) -> str:
    from grouprank.text import normalize_query
    return normalize_query(str(t))


def _read_examples(x, path=None) -> tuple[pd.DataFrame, list[dict]]:
    """Examples as a DataFrame, and where they came from (the file the table was read from, when known)."""
    from .data import file_digest, normalise_examples, read_examples
    if isinstance(x, (str, Path)):
        df = read_examples(x)
        return df, [{"path": str(x), "sha256": file_digest([x]), "rows": len(df)}]
    raw = x.to_pandas() if hasattr(x, "to_pandas") else x
    df = normalise_examples(raw)
    return df, [{"path": str(path) if path else "<in-memory>",
                 "sha256": file_digest([path]) if path else None, "rows": len(df)}]


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
            n_trained = 0
            if eval_qrels is None and cfg.evaluation.exclude_training_queries:
                # as the evaluate stage: the split's queries minus those trained on (a collection
                # without a train split is mined from the split it is evaluated on; its held-out share remains)
                from grouprank.text import training_queries
                trained = training_queries(texts, examples["query_id"], examples["anchor"])
                n_trained = len(trained)
                texts = {i: t for i, t in texts.items() if i not in trained}
                qr = qr[qr["query_id"].astype(str).isin(set(texts))]
            if texts:
                extra = f", {n_trained} training queries left out" if n_trained else ""
                return examples, texts, qr, f"split '{rc.eval_split}' ({len(texts)} queries with qrels{extra})"
        log.warning("no evaluation qrels/queries for split %r: holding out example queries instead", rc.eval_split)
    if rc.holdout_fraction <= 0:
        return examples, None, None, "none"
    train, held = holdout_split(examples, rc.holdout_fraction, cfg.seed)
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
    r = run.copy()
    r["rank"] = r.groupby("query_id").cumcount() + 1
    r["system"] = system
    return RUNS.from_pandas(r[["query_id", "doc_id", "rank", "score", "system"]], validate=False)


def run(inputs: dict, cfg, ctx: StageContext) -> StageResult:
    """Train the retriever; see the module docstring."""
    from .data import select_examples

    t_start = time.perf_counter()
    rc = cfg.retriever
    examples, data_info = _read_examples(inputs["retriever_examples"], (ctx.input_paths or {}).get("retriever_examples"))
    for d in data_info:
        d["source"] = rc.data_source
    documents, labels = inputs.get("documents"), inputs.get("labels")
    timings: dict[str, float] = {}
    stats: dict[str, Any] = {"examples_in": len(examples), "data_source": rc.data_source}

    examples = select_examples(examples, rc.max_positives_per_query)
    train_ex, eval_texts, eval_qrels, eval_desc = _eval_set(
        cfg, examples, documents=documents, queries=inputs.get("queries"), qrels=inputs.get("qrels"),
        eval_queries=inputs.get("eval_queries"), eval_qrels=inputs.get("eval_qrels"))
    train_ex, n_overlap = drop_eval_overlap(train_ex, eval_texts)
    split = ("heldout" if inputs.get("eval_qrels") is not None else  # what the metrics are on
             rc.eval_split if eval_desc.startswith("split") else "holdout")
    stats["train_rows_dropped_eval_overlap"] = n_overlap
    if n_overlap:
        log.warning("dropped %d training rows whose query is an evaluation query", n_overlap)
    evaluator = _evaluator(cfg, documents, eval_texts, eval_qrels)
    if evaluator is not None:
        stats["eval_queries"] = evaluator.n_queries

    metrics: dict[str, dict[str, float]] = {}
    outputs: dict[str, Any] = {}
    if evaluator is not None and rc.eval_before:
        t = time.perf_counter()
        run_b = evaluator.run(rc.base_model)
        metrics["before"] = _measure(run_b, evaluator, rc)
        timings["eval_before_s"] = time.perf_counter() - t
        stats["eval_before_corpus_reused"] = int(evaluator.last.get("corpus_reused", False))
        outputs["run_before"] = _runs_table(run_b, "base")

    model_dir = ctx.path("model")
    res, rounds, first, fstats = _train_rounds(cfg, train_ex, documents, labels, inputs.get("qrels"), model_dir,
                                               timings)
    stats.update({f"data_{k}": v for k, v in first.items()})

    if evaluator is not None and rc.eval_after:
        t = time.perf_counter()
        run_a = evaluator.run(str(model_dir), st_model=res.model, fresh=True)
        metrics["after"] = _measure(run_a, evaluator, rc)
        timings["eval_after_s"] = time.perf_counter() - t
        outputs["run_after"] = _runs_table(run_a, "finetuned")
    if metrics:
        from grouprank.evaluation.metrics import metrics_table
        import pyarrow as pa
        outputs["retriever_metrics"] = pa.concat_tables([
            metrics_table(v, system=("base" if k == "before" else "finetuned"), collection=cfg.data.collection,
                          split=split, n_queries=evaluator.n_queries) for k, v in metrics.items()])

    from .train import write_card
    write_card(model_dir, _card_info(cfg, data_info, fstats, rounds, metrics, eval_desc))
    outputs["retriever_model"] = model_dir
    stats.update(_stats(fstats, rounds, metrics))
    timings["wall_s"] = time.perf_counter() - t_start
    stats.update({k: round(v, 2) for k, v in timings.items()})
    files = {k: str(v) if isinstance(v, Path) else str(ctx.out_dir / STAGE.output(k).file) for k, v in outputs.items()}
    outputs["retriever_summary"] = ctx.write_json(STAGE.output("retriever_summary").file, {
        "outputs": files, "stats": stats, "eval": metrics, "eval_queries": eval_desc, "rounds": rounds})
    return StageResult(outputs, stats)


def _evaluator(cfg, documents, eval_texts, eval_qrels):
    """The before/after evaluation over the full corpus (None without evaluation queries or documents)."""
    if not eval_texts:
        return None
    if documents is None:
        log.warning("no documents given: evaluation skipped")
        return None
    from grouprank.collections import excluded_from_config

    from .evaluate import DenseEvaluator
    rc = cfg.retriever
    # BRIGHT's excluded ids: out of run_before/run_after and their metrics, as in evaluate
    return DenseEvaluator(documents, eval_texts, eval_qrels, measures=rc.eval_measures, depth=rc.eval_depth,
                          excluded=excluded_from_config(cfg), **_encoder_args(cfg))


def _encoder_args(cfg) -> dict:
    """How the retriever's evaluation and re-mining encode: the retrieval stage's encoder settings."""
    r = cfg.retrieval
    return dict(include_title=r.include_title, backend=eval_backend(cfg),
                max_seq_length=r.max_seq_length, batch_size=r.batch_size, query_prompt=r.query_prompt,
                document_prompt=r.document_prompt, store_root=cfg.work_path / "indexes",
                cache_dir=cfg.work_path / "models", shard_size=r.shard_size)


def eval_backend(cfg) -> str:
    """The encoder backend of the retriever's evaluation and re-mining: the retrieval stage's, but
    onnx-int8 as onnx (quantised vectors are not quality-neutral)."""
    b = cfg.retrieval.dense_backend
    return "onnx" if b == "onnx-int8" else b


def _measure(run, evaluator, rc) -> dict[str, float]:
    from grouprank.evaluation.metrics import evaluate
    return {k: float(v) for k, v in evaluate(run, evaluator.qrels, rc.eval_measures).items()}


def _train_rounds(cfg, train_ex, documents, labels, qrels, model_dir: Path, timings: dict):
    """Round 0, then `retriever.remine_rounds` re-mining rounds -> (last result, rounds, round 0's frame
    stats, the last round's)."""
    from .data import to_training_frame
    from .train import DISTILL_LOSSES, train_model
    rc = cfg.retriever
    teacher = None
    if rc.loss in DISTILL_LOSSES:
        if labels is None:
            raise ValueError(f"retriever.loss={rc.loss!r} distils the teacher's scores: it needs the labels input")
        from .data import teacher_scores
        teacher = teacher_scores(labels, rc.distill_judge, rc.distill_scale)
    frame, fstats = to_training_frame(train_ex, rc.n_negatives, drop_short=rc.drop_short, seed=cfg.seed,
                                      teacher=teacher)
    t = time.perf_counter()
    res = train_model(frame, rc, model_dir, dataset_name=f"grouprank retriever_examples ({rc.data_source})",
                      seed=cfg.seed, max_seq_length=cfg.retrieval.max_seq_length)
    timings["train_s"] = time.perf_counter() - t
    rounds = [{"round": 0, **res.stats()}]
    first = fstats
    for rnd in range(1, int(rc.remine_rounds) + 1):
        if documents is None:
            raise ValueError("re-mining needs the documents input")
        t = time.perf_counter()
        train_ex, rstats = _remine(cfg, res, train_ex, documents, labels, frame_negatives=fstats["n_negatives"],
                                   qrels=qrels)
        timings[f"remine_{rnd}_s"] = time.perf_counter() - t
        frame, fstats = to_training_frame(train_ex, fstats["n_negatives"], drop_short=rc.drop_short,
                                          seed=cfg.seed + rnd, teacher=teacher)
        t = time.perf_counter()
        res = train_model(frame, rc, model_dir, model=res.model, seed=cfg.seed + rnd,
                          max_seq_length=cfg.retrieval.max_seq_length)
        timings[f"train_round{rnd}_s"] = time.perf_counter() - t
        rounds.append({"round": rnd, **res.stats(), **rstats, **{f"data_{k}": v for k, v in fstats.items()}})
    return res, rounds, first, fstats


def _card_info(cfg, data_info, fstats, rounds, metrics, eval_desc) -> dict:
    rc = cfg.retriever
    return {"base_model": rc.base_model, "data": data_info, "data_stats": fstats, "train": rounds[-1],
            "rounds": rounds, "eval": metrics, "eval_queries": eval_desc, "collection": cfg.data.collection,
            "config": {"retriever": rc.model_dump(mode="json"), "retrieval_encoder": {
                "include_title": cfg.retrieval.include_title, "max_seq_length": cfg.retrieval.max_seq_length,
                "backend": eval_backend(cfg)}, "datasets": cfg.datasets.model_dump(mode="json")}}


def _stats(fstats, rounds, metrics) -> dict:
    out = {"train_rows": fstats["rows_out"], "n_negatives": fstats["n_negatives"], "rounds": len(rounds),
                "steps": rounds[-1]["steps"], "train_loss": rounds[-1]["train_loss"]}
    for phase, vals in metrics.items():
        for m, v in vals.items():
            out[f"{phase}_{m}"] = round(v, 5)
    if "before" in metrics and "after" in metrics:
        for m in metrics["after"]:
            if m in metrics["before"]:
                out[f"delta_{m}"] = round(metrics["after"][m] - metrics["before"][m], 5)
    return out


STAGE = Stage(
    name="train_retriever", title="train retriever", run=run, builds_models=True,
    # the training steps, and the corpus encodings of the before/after evaluation
    progress_parts=lambda c: 1 + 2 * (c.retriever.eval_split != "none"),
    help="fine-tune a dense retriever (sentence-transformers, MNRL) on the retriever examples",
    inputs=(table("retriever_examples", RETRIEVER_EXAMPLES, lenient=True,
                  doc="RETRIEVER_EXAMPLES, or the exported anchor/positive/negative_1..n view (file or folder)"),
            table("documents", DOCUMENTS), table("queries", QUERIES), table("qrels", QRELS),
            table("labels", LABELS, optional=True),
            # an evaluation set of one's own instead of the collection's split (no stage makes them)
            table("eval_queries", QUERIES, optional=True, doc="evaluation queries (with eval_qrels)"),
            table("eval_qrels", QRELS, optional=True, doc="qrels of the evaluation queries")),
    outputs=(folder("retriever_model", "model"),
             table("retriever_metrics", METRICS, "metrics.parquet", optional=True),
             table("run_before", RUNS, optional=True),
             table("run_after", RUNS, optional=True),
             file("retriever_summary", "summary.json")),
    sections=("data", "retriever", "retrieval", "evaluation", "datasets", "seed"), timeout_s=72 * 3600, retries=1,
)


def _remine(cfg, res, train_ex: pd.DataFrame, documents, labels, frame_negatives: int, qrels=None):
    """One re-mining pass with the model just trained (corpus embeddings persisted in the store).
    With `datasets.human_guard` the collection's qrels keep human-cited documents out of the
    re-mined negatives, as in the dataset builder."""
    from grouprank.text import document_text_map
    from grouprank.trainsets.retriever import GuardSpec, human_positive_map

    from .evaluate import DenseEvaluator
    from .remine import remine_negatives
    rc = cfg.retriever
    ev = DenseEvaluator(documents, {}, pd.DataFrame({"query_id": [], "doc_id": [], "grade": []}),
                        **_encoder_args(cfg))
    enc = ev.encoder(str(res.model_dir), fresh=True)
    D, _ = ev.corpus_embeddings(enc, st_model=res.model)
    qids = list(dict.fromkeys(train_ex["query_id"]))
    qtext = dict(zip(train_ex["query_id"], train_ex["anchor"]))
    Q = ev._st_encode(res.model, [qtext[q] for q in qids], cfg.retrieval.query_prompt) if eval_backend(cfg) == "torch" \
        else enc.encode_queries([qtext[q] for q in qids])
    spec = GuardSpec.from_config(cfg.datasets)
    n = frame_negatives or spec.negatives
    human = human_positive_map(_table(qrels, QRELS), qids) if cfg.datasets.human_guard and qrels is not None else None
    return remine_negatives(train_ex, doc_ids=ev.doc_ids, doc_emb=D, query_emb=dict(zip(qids, Q)),
                            doc_texts=document_text_map(documents), labels=labels, spec=spec, n_negatives=n,
                            rank_range=tuple(rc.remine_range), unjudged=rc.remine_unjudged, margin=rc.remine_margin,
                            human=human)
