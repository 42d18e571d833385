"""Corpus-only adaptation of all-MiniLM-L6-v2, measured on a collection's judged queries.

    .venv/bin/python bench/adapt.py --collection cisi --out bench/results/adapt/cisi.json
    .venv/bin/python bench/adapt.py --collection NAME --format beir --path DIR --out FILE
    .venv/bin/python bench/adapt.py --summary bench/results/adapt_summary.json bench/results/adapt/*.json

The arm (`grouprank.adaptation.arm.CorpusArm`) reads the documents only: pseudo-queries from the
corpus, teacher and recipe chosen on held-out synthetic queries. The collection's queries and qrels
are read afterwards, only to score (nDCG@10, dense retrieval over the whole corpus, every judged
query; SciFact: its 300 test claims, train claims unused):
  base      the student as shipped
  adapted   the student the arm chose (the base itself when no recipe beat it on held-out synthetic)
  teacher   the chosen teacher used as a retriever (pools of BM25 / mpnet / MiniLM top 100)
  gap_closed (adapted - base) / (teacher - base)
plus every candidate teacher and recipe on the held-out synthetic queries and on the test, side by
side, so one can see whether synthetic validation picks well. Per-stage wall time in stage_wall_s.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import ROOT, setup, write_report  # noqa: E402  (bench/_common.py)

setup("adapt")

TEST_SPLIT = {"scifact": "test"}
SEED = 13
# the student as measured: all-MiniLM-L6-v2 at 256 tokens, torch-bf16 where the CPU has native bf16
STUDENT = ("all-MiniLM-L6-v2", 256, "auto")  # model, tokens, backend


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--collection")
    ap.add_argument("--format", default="builtin")
    ap.add_argument("--path")
    ap.add_argument("--out")
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--recipes", nargs="+", default=None)
    ap.add_argument("--max-train-rows", type=int, default=None)
    ap.add_argument("--per-doc", type=int, default=None)
    ap.add_argument("--generated-docs", type=int, default=0, help="documents that also get an LLM-generated "
                    "question (adaptation.generated_docs)")
    ap.add_argument("--llm", default="smollm2", help="with --generated-docs: a managed local model "
                    "(smollm2, gemma3-270m, a .gguf) or an OpenAI-compatible base URL")
    ap.add_argument("--llm-model", default="local", help="the model name sent to a --llm base URL")
    ap.add_argument("--query-log", action="store_true", help="also the query-log arm (2 folds of the "
                    "collection's own queries, no labels)")
    ap.add_argument("--summary", default=None, help="write the five-collection summary from these reports")
    ap.add_argument("reports", nargs="*")
    a = ap.parse_args(argv)
    if a.summary:
        return summary(a.summary, a.reports)
    from grouprank.adaptation.arm import CorpusArm
    from grouprank.adaptation.config import AdaptationConfig, Student
    from grouprank.adaptation.final_test import headline, judged_queries, side_by_side, test_arm
    from grouprank.collections import load_collection
    t_all = time.time()
    t0 = time.time()
    coll = load_collection(a.collection, format=a.format, path=a.path)
    load_s = round(time.time() - t0, 1)
    s = AdaptationConfig()
    if a.recipes:
        s.recipes = tuple(a.recipes)
    if a.max_train_rows:
        s.max_train_rows = a.max_train_rows
    if a.per_doc:
        s.per_doc = a.per_doc
    work = Path(a.work_dir or ROOT / "grouprank_output" / "adapt" / coll.name)
    gen = None
    if a.generated_docs:
        s.generated_docs = a.generated_docs
        gen = llm_generator(a, coll, work)
    arm = CorpusArm(coll.documents, work, s, Student(*STUDENT), seed=SEED, generate=gen,
                    progress=lambda m: print(f"[adapt {coll.name}] {m}", flush=True))
    res = arm.run()

    # --- the test: real queries and their qrels, read only now ---------------------------------
    t0 = time.time()
    qt, qrels = judged_queries(coll.queries, coll.qrels, TEST_SPLIT.get(coll.name))
    test = test_arm(arm, res, qt, qrels)
    qids, sig = test.pop("query_ids"), test.pop("signals")
    arm._timed("test", t0)
    query_log = run_query_log(arm, res, qids, qt, qrels, sig) if a.query_log else None
    side = side_by_side(res, test)
    report = {"collection": coll.name, "docs": len(arm.ids), "test_queries": len(qids),
              **headline(res, test),
              "train_queries": res["train_rows"], "side_by_side": side,
              "wall_s": round(time.time() - t_all, 1),
              "stage_wall_s": {"load": load_s, **arm.stage_wall_s},
              "query_log_arm": query_log,
              "arm": {k: v for k, v in res.items() if k not in ("stage_wall_s", "models", "model_dir")},
              "notes": "human queries/qrels read only after the arm finished, to score; timings on a shared "
                       "2-core machine (other jobs running): see machine.loadavg"}
    if a.out:
        write_report(a.out, report)
    print(json.dumps({k: report[k] for k in ("collection", "base", "adapted", "delta", "teacher", "teacher_name",
                                             "chosen_recipe", "gap_closed", "train_queries", "wall_s")}))
    print(json.dumps(side, indent=1))
    return 0


def llm_generator(a, coll, work: Path):
    """The stage's generator (grouprank.adaptation.stage.generator) on the endpoint --llm names, its
    answers cached in the work dir (a rerun pays nothing twice)."""
    from grouprank.adaptation.stage import generator
    from grouprank.config import RunConfig
    from grouprank.progress import LoggingProgress
    ep = ({"name": "gen", "base_url": a.llm, "model": a.llm_model} if "://" in a.llm
          else {"name": "gen", "managed": a.llm, "model": Path(a.llm).name})
    cfg = RunConfig.model_validate({"work_dir": str(work), "seed": SEED, "llm": {"endpoints": [ep]}})
    return generator(cfg, coll.documents, LoggingProgress(f"[adapt {coll.name}] generate", unit="requests"))


def run_query_log(arm, res, qids, qt, qrels, sig) -> dict:
    """The query-log arm: the collection's own queries WITHOUT their labels, two folds. Train on one
    half's queries (teacher labels: its top 3 documents as positives, a rank 10-30 document as the
    negative) with the corpus arm's chosen teacher and recipe, from the base student; score on the
    other half; swap. Its rows alone (not mixed with the synthetic ones): a few hundred rows train in
    minutes, and the two arms compare as sources of training queries."""
    import random

    from grouprank.adaptation.final_test import ndcg10
    from grouprank.adaptation.recipe import RECIPES, query_log_rows
    from grouprank.adaptation.teacher import TEACHERS, Pools
    from grouprank.retriever_training.train import train_model
    t0 = time.time()
    s = arm.s
    order = list(qids)
    random.Random(arm.seed).shuffle(order)
    folds = [sorted(order[0::2]), sorted(order[1::2])]
    pos = {q: i for i, q in enumerate(qids)}
    w = TEACHERS[res["teacher"]]
    rname = res["chosen"] if res["chosen"] != "base" else s.recipes[0]
    rec = RECIPES[rname]
    out = {"recipe": rname, "teacher": res["teacher"], "folds": []}
    for f in (0, 1):
        tr, te = folds[f], folds[1 - f]
        sub = Pools({k: v[[pos[q] for q in tr]] for k, v in sig.items()}, s.depth)
        rows = query_log_rows([qt[q] for q in tr], sub, arm.texts, w, positives=3, seed=arm.seed + f)
        frame = rec.frame(rows)
        cfg = rec.train_config(max_steps=s.max_steps, train_tokens=s.train_tokens)
        path = arm.work / "models" / f"query_log_{f}"
        train_model(frame, cfg, path, base_model=arm.student.model, seed=arm.seed, max_seq_length=arm.student.tokens)
        enc = arm.encoder(str(path), arm.student.tokens, fresh=True)
        D = enc.encode_documents(arm.texts)
        Q = enc.encode_queries([qt[q] for q in te])
        qr = qrels[qrels.query_id.isin(te)]
        te_idx = [pos[q] for q in te]
        tpools = Pools({k: v[te_idx] for k, v in sig.items()}, s.depth)
        fold = {"train_queries": len(tr), "test_queries": len(te), "rows_query_log": len(rows),
                "base": ndcg10(te, arm.ids, sig["minilm"][te_idx], qr),
                "corpus_arm": ndcg10(te, arm.ids, (arm.encoder(res["model_dir"], arm.student.tokens)
                                                      .encode_queries([qt[q] for q in te]) @
                                                      (arm.student_vectors.get(res["chosen"], None)
                                                       if res["chosen"] != "base" else arm.corpus_vectors("minilm")).T), qr),
                "query_log_arm": ndcg10(te, arm.ids, Q @ D.T, qr),
                "teacher": ndcg10(te, arm.ids, [tpools.ranking(i, w) for i in range(len(te))], qr)}
        out["folds"].append(fold)
        print(f"[adapt query-log] fold {f}: {fold}", flush=True)
    for k in ("base", "corpus_arm", "query_log_arm", "teacher"):
        n = sum(fd["test_queries"] for fd in out["folds"])
        out[k] = round(sum(fd[k] * fd["test_queries"] for fd in out["folds"]) / n, 4)
    arm._timed("query_log_arm", t0)
    return out


def summary(out: str, reports: list[str]) -> int:
    cols = {}
    for p in reports:
        r = json.loads(Path(p).read_text())
        cols[r["collection"]] = {**r, "file": Path(p).name}
    deltas = [r["adapted"] - r["base"] for r in cols.values()]
    rep = {"collections": cols, "mean_delta": round(sum(deltas) / len(deltas), 4) if deltas else None,
           "min_delta": round(min(deltas), 4) if deltas else None,
           "command": "bench/adapt.py --collection NAME --out bench/results/adapt/NAME.json, per collection"}
    write_report(out, rep)
    for n, r in cols.items():
        print(f"{n:20s} base {r['base']:.4f} adapted {r['adapted']:.4f} delta {r['adapted'] - r['base']:+.4f} "
              f"teacher {r['teacher']:.4f} ({r['teacher_name']}) gap_closed {r['gap_closed']} wall {r['wall_s']} s")
    print(f"mean delta {rep['mean_delta']} min delta {rep['min_delta']}")
    print("\n| collection | judged queries | base | adapted | Δ | teacher (chosen on synthetic) | gap closed | "
          "recipe | train rows | wall |\n|---|---|---|---|---|---|---|---|---|---|")
    for n, r in cols.items():
        print(f"| {n} | {r['test_queries']} | {r['base']:.3f} | {r['adapted']:.3f} | {r['adapted'] - r['base']:+.3f} | "
              f"{r['teacher']:.3f} ({r['teacher_name']}) | {r['gap_closed']} | {r['chosen_recipe']} | "
              f"{r['train_queries']} | {r['wall_s'] / 60:.0f} min |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
