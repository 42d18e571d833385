"""Dataset building and export at SciFact-train scale (the size of the end-to-end SciFact run).

    python bench/trainsets_build.py --out trainsets_build.json [--collection scifact --split train --pool 50]

Candidates: BM25 (bm25s) top `--pool` for every query of the split. Labels: the paper-sized pool
of each query graded by the human qrels (relevant -> 3, everything else in the pool -> 0: an
unjudged pooled document is treated as non-relevant here, which a real judge would decide), with
the fused order = grade, then BM25 rank. Then `build_datasets` and `export_datasets` with the
default DatasetsConfig. Prints and writes wall times and counts (JSON).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import setup, write_report  # noqa: E402  (bench/_common.py)

setup("trainsets_build")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--collection", default="scifact")
    ap.add_argument("--split", default="train")
    ap.add_argument("--pool", type=int, default=50)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from data_schemas import CANDIDATES, QRELS
    from grouprank.collections import load_collection
    from grouprank.config import RunConfig
    from grouprank.first_stage.bm25 import BM25Retriever
    from grouprank.text import document_texts
    from grouprank.trainsets.human import labels_from_qrels
    from grouprank.trainsets.export_stage import export_datasets
    from grouprank.trainsets.stage import build_datasets

    t0 = time.time()
    c = load_collection(args.collection)
    queries = c.queries_for(args.split)
    qids = queries["query_id"].to_pylist()
    r = BM25Retriever().index(*document_texts(c.documents))
    hits = r.search(queries["text"].to_pylist(), k=args.pool)
    t_retrieve = time.time() - t0
    rows, qrel_rows = [], []
    human = {(q, d): g for q, d, g in zip(c.qrels["query_id"].to_pylist(), c.qrels["doc_id"].to_pylist(),
                                           c.qrels["grade"].to_pylist())}
    for q, hs in zip(qids, hits):
        for i, (d, s) in enumerate(hs, 1):
            rows.append({"query_id": q, "doc_id": d, "rank": i, "fused_score": float(s), "bm25_score": float(s),
                         "bm25_rank": i, "dense_score": None, "dense_rank": None, "fusion": "bm25",
                         "pool": "top" if i <= 10 else "sampled"})
            g = 3 if human.get((q, d), 0) > 0 else 0
            qrel_rows.append({"query_id": q, "doc_id": d, "grade": g, "original_label": str(g), "split": "train",
                              "source": "synthetic"})
    cand = CANDIDATES.from_records(rows)
    labels = labels_from_qrels(QRELS.from_records(qrel_rows, validate=False), cand)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig(work_dir=tmp, data={"collection": args.collection})
        t1 = time.time()
        rl, sft, ret, stats = build_datasets(cfg.datasets, documents=c.documents, queries=queries, labels=labels,
                                             candidates=cand)
        t_build = time.time() - t1
        t2 = time.time()
        res = export_datasets(cfg, Path(tmp) / "export", documents=c.documents, queries=queries, labels=labels,
                              reranker_rl=rl, reranker_sft=sft, retriever_examples=ret, build_stats=stats,
                              build_config=cfg.datasets.model_dump(mode="json"))
        t_export = time.time() - t2
    out = {
        "collection": args.collection, "split": args.split, "queries": len(qids), "pool": args.pool,
        "labelled_pairs": labels.num_rows, "rl_examples": rl.num_rows, "sft_examples": sft.num_rows,
        "retriever_examples": ret.num_rows, "retriever_rows_exported": res["stats"]["retriever_rows"],
        "retriever_rows_left_out_short": res["stats"]["retriever_rows_left_out_short"],
        "guard": {k: v for k, v in stats.items() if k.startswith("guard_") or k.startswith("negative_candidates")},
        "export_bytes": res["stats"]["bytes"], "export_files": res["stats"]["files"],
        "wall_s": {"load_and_bm25": round(t_retrieve, 2), "build_datasets": round(t_build, 2),
                   "export": round(t_export, 2)},
    }
    print(json.dumps(out, indent=2))
    write_report(args.out, out)


if __name__ == "__main__":
    main()
