"""Stage `train_retriever`: contrastive fine-tuning of the dense retriever on the retriever examples
(`train_retriever` is the library entry, on tables).

Inputs:
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

Outputs: `retriever_model` (the sentence-transformers model with its card; README.md names the data
and the configuration, `grouprank_training.json` the same facts), `retriever_metrics` (METRICS),
`run_before` / `run_after` (RUNS), `retriever_summary`.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from data_schemas import DOCUMENTS, LABELS, METRICS, QRELS, QUERIES, RETRIEVER_EXAMPLES, RUNS
from grouprank.stage import Stage, StageContext, StageResult, file, folder, table

log = logging.getLogger(__name__)

STAGE_DIR = "train_retriever"


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


def train_retriever(cfg, **inputs: Any) -> dict:
    """Train the retriever; see the module docstring. -> {"outputs": {name: table or path}, "stats"}."""
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
    examples, data_info = _read_examples(inputs["retriever_examples"], inputs.get("examples_path"))
    source = inputs.get("data_source") or rc.data_source
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
    split = ("heldout" if inputs.get("eval_qrels") is not None else  # what the metrics are on
             rc.eval_split if eval_desc.startswith("split") else "holdout")
    stats["train_rows_dropped_eval_overlap"] = n_overlap
    if n_overlap:
        log.warning("dropped %d training rows whose query is an evaluation query", n_overlap)

    evaluator = None
    if eval_texts and documents is not None:
        from grouprank.collections import excluded_from_config
        evaluator = DenseEvaluator(
            documents, eval_texts, eval_qrels, include_title=cfg.retrieval.include_title,
            measures=rc.eval_measures, depth=rc.eval_depth, backend=rc.eval_backend,
            max_seq_length=rc.max_seq_length, batch_size=cfg.retrieval.batch_size,
            query_prompt=cfg.retrieval.query_prompt, document_prompt=cfg.retrieval.document_prompt,
            store_root=cfg.work_path / "indexes", cache_dir=cfg.work_path / "models",
            shard_size=cfg.retrieval.shard_size,
            # BRIGHT's excluded ids: out of run_before/run_after and their metrics, as in evaluate
            excluded=inputs.get("excluded") if inputs.get("excluded") is not None else excluded_from_config(cfg))
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
        outputs["run_before"] = _runs_table(run_b, "base")

    # --- round 0 (+ re-mining rounds)
    teacher = None
    from .train import DISTILL_LOSSES
    if rc.loss in DISTILL_LOSSES:
        if labels is None:
            raise ValueError(f"retriever.loss={rc.loss!r} distils the teacher's scores: it needs the labels input")
        from .data import teacher_scores
        teacher = teacher_scores(labels, rc.distill_judge, rc.distill_scale)
    frame, fstats = to_training_frame(train_ex, rc.n_negatives, drop_short=rc.drop_short, seed=cfg.seed,
                                      teacher=teacher)
    stats.update({f"data_{k}": v for k, v in fstats.items()})
    model_dir = out / "model"
    rounds: list[dict] = []
    t = time.perf_counter()
    res = train_model(frame, rc, model_dir, dataset_name=f"grouprank retriever_examples ({source})", seed=cfg.seed)
    timings["train_s"] = time.perf_counter() - t
    rounds.append({"round": 0, **res.stats()})
    for rnd in range(1, int(rc.remine_rounds) + 1):
        if documents is None:
            raise ValueError("re-mining needs the documents input")
        t = time.perf_counter()
        train_ex, rstats = _remine(cfg, res, train_ex, documents, labels, frame_negatives=fstats["n_negatives"],
                                   qrels=inputs.get("qrels"))
        timings[f"remine_{rnd}_s"] = time.perf_counter() - t
        frame, fstats = to_training_frame(train_ex, fstats["n_negatives"], drop_short=rc.drop_short, seed=cfg.seed + rnd,
                                          teacher=teacher)
        t = time.perf_counter()
        res = train_model(frame, rc, model_dir, model=res.model, seed=cfg.seed + rnd)
        timings[f"train_round{rnd}_s"] = time.perf_counter() - t
        rounds.append({"round": rnd, **res.stats(), **rstats, **{f"data_{k}": v for k, v in fstats.items()}})

    if evaluator is not None and rc.eval_after:
        t = time.perf_counter()
        run_a = evaluator.run(str(model_dir), st_model=res.model, fresh=True)
        from grouprank.evaluation.metrics import evaluate
        metrics["after"] = {k: float(v) for k, v in evaluate(run_a, evaluator.qrels, rc.eval_measures).items()}
        timings["eval_after_s"] = time.perf_counter() - t
        outputs["run_after"] = _runs_table(run_a, "finetuned")

    coll = cfg.data.collection
    if metrics:
        mt = [metrics_table(v, system=("base" if k == "before" else "finetuned"), collection=coll,
                            split=split, n_queries=evaluator.n_queries) for k, v in metrics.items()]
        import pyarrow as pa
        outputs["retriever_metrics"] = pa.concat_tables(mt)

    info = {"base_model": rc.base_model, "data": data_info, "data_stats": fstats, "train": rounds[-1],
            "rounds": rounds, "eval": metrics, "eval_queries": eval_desc, "collection": coll,
            "config": {"retriever": rc.model_dump(mode="json"), "retrieval_encoder": {
                "include_title": cfg.retrieval.include_title, "max_seq_length": rc.max_seq_length,
                "eval_backend": rc.eval_backend}, "datasets": cfg.datasets.model_dump(mode="json")}}
    write_card(model_dir, info)
    outputs["retriever_model"] = model_dir

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
    files = {k: str(out / STAGE_FILES[k]) if not isinstance(v, Path) else str(v) for k, v in outputs.items()}
    summary = {"outputs": files, "stats": stats, "eval": metrics, "eval_queries": eval_desc, "rounds": rounds}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    outputs["retriever_summary"] = out / "summary.json"
    return {"outputs": outputs, "stats": stats}


STAGE_FILES = {"retriever_model": "model", "retriever_metrics": "metrics.parquet", "run_before": "run_before.parquet",
               "run_after": "run_after.parquet", "retriever_summary": "summary.json"}


def run(inputs: dict, cfg, ctx: StageContext) -> StageResult:
    res = train_retriever(cfg, **inputs, output_dir=ctx.out_dir,
                          examples_path=(ctx.input_paths or {}).get("retriever_examples"))
    return StageResult(res["outputs"], res["stats"])


STAGE = Stage(
    name="train_retriever", title="train retriever", run=run, builds_models=True,
    # the training steps, and the corpus encodings of the before/after evaluation
    progress_parts=lambda c: 1 + 2 * (c.retriever.eval_split != "none"),
    help="fine-tune a dense retriever (sentence-transformers, MNRL) on the retriever examples",
    inputs=(table("retriever_examples", RETRIEVER_EXAMPLES, lenient=True,
                  doc="RETRIEVER_EXAMPLES, or the exported anchor/positive/negative_1..n view (file or folder)"),
            table("documents", DOCUMENTS), table("queries", QUERIES), table("qrels", QRELS),
            table("labels", LABELS, optional=True)),
    outputs=(folder("retriever_model", STAGE_FILES["retriever_model"]),
             table("retriever_metrics", METRICS, STAGE_FILES["retriever_metrics"], optional=True),
             table("run_before", RUNS, STAGE_FILES["run_before"], optional=True),
             table("run_after", RUNS, STAGE_FILES["run_after"], optional=True),
             file("retriever_summary", STAGE_FILES["retriever_summary"])),
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
    human = human_positive_map(_table(qrels, QRELS), qids) if cfg.datasets.human_guard and qrels is not None else None
    return remine_negatives(train_ex, doc_ids=ev.doc_ids, doc_emb=D, query_emb=dict(zip(qids, Q)),
                            doc_texts=document_text_map(documents), labels=labels, spec=spec, n_negatives=n,
                            rank_range=tuple(rc.remine_range), unjudged=rc.remine_unjudged, margin=rc.remine_margin,
                            human=human)
