"""Choose the synthetic retriever-data recipe on TRAIN claims only (never the test claims).

    .venv/bin/python bench/retriever_recipe_validation.py --work-dir DIR --out FILE

Needs a work dir where bench/e2e_scifact.py has run the data stages (mine_queries, retrieve,
judge, fuse). A seeded 20 % of the kept (leakage-guarded) SciFact train claims is held out; each
variant builds retriever examples from the synthetic labels with its guard settings, trains
all-MiniLM-L6-v2 on the other 80 % (the retriever stage drops rows of held-out claims), and is
scored by nDCG@10 on the held-out claims against SciFact's *human train* qrels, dense retrieval
over the full corpus. The human-label arm on the same split is the reference.

Variants (datasets.positive_grade / negative_max_grade; best-fused positive per claim):
  A  pos >= 2, neg <= 0   the builder's defaults: negatives are clearly irrelevant (median pool rank ~50)
  B  pos >= 2, neg <= 1   negatives may be "marginal" documents (harder)
  C  pos >= 3, neg <= 2   only the top grade is positive; negatives are the highest-ranked rest (hardest)
  D  B's data, MarginMSE on the teacher's soft scores (the local judge's 0-10 score x 0.1)
  E  B's data, MNRL + MarginMSE (summed)
  F  B's data, DistillKLDivLoss on the teacher's scores
The human arm always trains with MNRL (its grades are binary). `--negatives` hard negatives per row.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path

from _common import setup, write_report  # noqa: E402  (bench/_common.py)

setup("retriever_recipe_validation")

VARIANTS = {"A": (2, 0, "mnrl"), "B": (2, 1, "mnrl"), "C": (3, 2, "mnrl"), "D": (2, 1, "margin_mse"),
            "E": (2, 1, "mnrl+margin_mse"), "F": (2, 1, "distill_kl")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--variants", default="A,B,C")
    p.add_argument("--no-human", action="store_true")
    p.add_argument("--holdout", type=float, default=0.2)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--negatives", type=int, default=1)
    p.add_argument("--seed", type=int, default=13)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("sentence_transformers", "transformers", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import pyarrow as pa
    import pyarrow.compute as pc
    from data_schemas import QRELS, QUERIES, RETRIEVER_EXAMPLES
    from grouprank.config import RunConfig
    from grouprank.executor import run_stage
    from grouprank.retriever_training.stage import STAGE as rt_stage
    from grouprank.retriever_training.data import human_examples
    from grouprank.trainsets.stage import build_datasets

    work = Path(args.work_dir).resolve()
    documents = work / "collection" / "documents.parquet"
    mined = work / "mine_queries" / "mined_queries.parquet"
    candidates = work / "retrieve" / "candidates.parquet"
    labels = work / "fuse" / "labels.parquet"
    qrels_all = QRELS.read(work / "collection" / "qrels.parquet")
    mq = QUERIES.read(mined)
    kept = sorted(q for q, d in zip(mq.column("query_id").to_pylist(), mq.column("decision").to_pylist())
                  if d == "kept")
    rng = random.Random(args.seed)
    held = set(rng.sample(kept, int(round(args.holdout * len(kept)))))
    tr = qrels_all.filter(pc.equal(qrels_all["split"], "train"))
    val_qrels = tr.filter(pa.array([q in held for q in tr.column("query_id").to_pylist()]))
    val_queries = mq.filter(pa.array([q in held for q in mq.column("query_id").to_pylist()]))
    vdir = work / "recipe_validation"
    vdir.mkdir(parents=True, exist_ok=True)
    val_queries_path = QUERIES.write(val_queries, vdir / "heldout_queries.parquet")
    val_qrels_path = QRELS.write(val_qrels, vdir / "heldout_qrels.parquet")
    base_cfg = {"work_dir": str(work), "seed": args.seed, "retrieval": {"dense_backend": "onnx", "max_seq_length": 256},
                "retriever": {"lr": args.lr, "n_negatives": args.negatives, "max_positives_per_query": 1}}
    out: dict = {"held_out_claims": len(held), "train_claims": len(kept) - len(held), "variants": {},
                 "protocol": __doc__.strip().splitlines()[2:8]}
    first = True
    arms = [v for v in args.variants.split(",") if v] + ([] if args.no_human else ["human"])
    for v in arms:
        t0 = time.perf_counter()
        cfg = RunConfig.model_validate(base_cfg)
        cfg.retriever.eval_before = first
        if v == "human":
            cfg.retriever.max_positives_per_query = None
            ex, st = human_examples(qrels_all, candidates, documents, mined, cfg.datasets, split="train")
        else:
            pg, nmax, loss = VARIANTS[v]
            cfg.datasets.positive_grade, cfg.datasets.negative_max_grade = pg, nmax
            cfg.datasets.negatives_per_example = args.negatives
            cfg.datasets.human_guard = False  # the synthetic arms use no human label of train claims
            cfg.retriever.loss = loss
            _, _, ex, st = build_datasets(cfg.datasets, documents=documents, queries=mined, labels=labels,
                                          candidates=candidates)
        path = RETRIEVER_EXAMPLES.write(ex, vdir / f"examples_{v}.parquet")
        cfg.retriever.data_source = "human" if v == "human" else f"synthetic-{v}"
        # the stage through the runner core's one-stage step, on files; the held-out claims are its
        # optional evaluation ports
        res = run_stage(rt_stage, cfg, {"retriever_examples": path, "documents": documents, "queries": mined,
                                        "qrels": work / "collection" / "qrels.parquet",
                                        "eval_queries": val_queries_path, "eval_qrels": val_qrels_path,
                                        **({} if v == "human" else {"labels": labels})},
                        out_dir=vdir / f"model_{v}")
        s = res["stats"]
        if first:
            out["base"] = s["before_nDCG@10"]
            first = False
        out["variants"][v] = {"loss": cfg.retriever.loss, "nDCG@10": s["after_nDCG@10"], "R@100": s["after_R@100"],
                              "train_rows": s["train_rows"], "dropped_heldout_rows": s["train_rows_dropped_eval_overlap"],
                              "train_loss": s["train_loss"], "wall_s": round(time.perf_counter() - t0, 1)}
        logging.info("variant %s: %s", v, out["variants"][v])
        write_report(args.out, out)  # after every arm: a long run leaves what it has
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
