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


def test_queries(coll):
    """({query_id: text}, qrels DataFrame) of the judged queries scored."""
    qr = coll.qrels.to_pandas()
    split = TEST_SPLIT.get(coll.name)
    if split:
        qr = qr[qr.split == split]
    qr = qr[["query_id", "doc_id", "grade"]]
    judged = set(qr[qr.grade > 0].query_id)
    qt = {q: t for q, t in zip(coll.queries["query_id"].to_pylist(), coll.queries["text"].to_pylist())
          if q in judged}
    return qt, qr


def score_run(qids, doc_ids, scores_or_rankings, qrels, dense=True):
    import numpy as np
    import pandas as pd

    from grouprank.evaluation.metrics import evaluate
    rows = []
    if dense:
        S = scores_or_rankings
        for i, q in enumerate(qids):
            top = np.argpartition(-S[i], 100)[:100]
            rows.append(pd.DataFrame({"query_id": q, "doc_id": [doc_ids[j] for j in top], "score": S[i, top]}))
    else:
        for q, (order, sc) in zip(qids, scores_or_rankings):
            rows.append(pd.DataFrame({"query_id": q, "doc_id": [doc_ids[j] for j in order[:100]],
                                      "score": sc[:100]}))
    run = pd.concat(rows, ignore_index=True)
    return round(float(evaluate(run, qrels, measures=("nDCG@10",))["nDCG@10"]), 4)


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
    ap.add_argument("--query-log", action="store_true", help="also the query-log arm (2 folds of the "
                    "collection's own queries, no labels)")
    ap.add_argument("--summary", default=None, help="write the five-collection summary from these reports")
    ap.add_argument("reports", nargs="*")
    a = ap.parse_args(argv)
    if a.summary:
        return summary(a.summary, a.reports)
    import numpy as np

    from grouprank.adaptation.arm import ArmSettings, CorpusArm
    from grouprank.adaptation.teacher import TEACHERS, Pools
    from grouprank.collections import load_collection
    t_all = time.time()
    t0 = time.time()
    coll = load_collection(a.collection, format=a.format, path=a.path)
    load_s = round(time.time() - t0, 1)
    s = ArmSettings()
    if a.recipes:
        s.recipes = tuple(a.recipes)
    if a.max_train_rows:
        s.max_train_rows = a.max_train_rows
    if a.per_doc:
        s.per_doc = a.per_doc
    work = Path(a.work_dir or ROOT / "grouprank_output" / "adapt" / coll.name)
    arm = CorpusArm(coll.documents, work, s, progress=lambda m: print(f"[adapt {coll.name}] {m}", flush=True))
    res = arm.run()

    # --- the test: real queries and their qrels, read only now ---------------------------------
    t0 = time.time()
    qt, qrels = test_queries(coll)
    qids = sorted(qt)
    qtexts = [qt[q] for q in qids]
    sig = arm.signal_scores(qtexts)
    pools = Pools(sig, s.depth)
    test = {"teachers": {}, "recipes": {}}
    for name, w in TEACHERS.items():
        test["teachers"][name] = score_run(qids, arm.ids, [pools.ranking(i, w) for i in range(len(qids))],
                                           qrels, dense=False)
    test["recipes"]["base"] = score_run(qids, arm.ids, sig["minilm"], qrels)
    for rname in s.recipes:
        enc = arm.encoder(res["models"][rname], s.student_tokens)
        Q = enc.encode_queries(qtexts)
        test["recipes"][rname] = score_run(qids, arm.ids, Q @ arm.student_vectors[rname].T, qrels)
    arm._timed("test", t0)
    query_log = run_query_log(arm, res, qids, qt, qrels, sig) if a.query_log else None
    base, adapted = test["recipes"]["base"], test["recipes"][res["chosen"]]
    teacher = test["teachers"][res["teacher"]]
    side = {"teachers": {n: {"held_out_synthetic_nDCG@10": res["validation"]["teachers"].get(n, {}).get("nDCG@10"),
                             "test_nDCG@10": test["teachers"][n]} for n in TEACHERS},
            "recipes": {n: {"held_out_synthetic_nDCG@10": res["validation"]["recipes"][n]["nDCG@10"],
                            "test_nDCG@10": test["recipes"][n]} for n in test["recipes"]}}
    side["teachers"]["minilm"]["held_out_synthetic_nDCG@10"] = res["validation"]["recipes"]["base"]["nDCG@10"]
    report = {"collection": coll.name, "docs": len(arm.ids), "test_queries": len(qids),
              "base": base, "adapted": adapted, "delta": round(adapted - base, 4), "teacher": teacher,
              "teacher_name": res["teacher"], "chosen_recipe": res["chosen"],
              "gap_closed": round((adapted - base) / (teacher - base), 3) if teacher - base > 1e-9 else None,
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


def run_query_log(arm, res, qids, qt, qrels, sig) -> dict:
    """The query-log arm: the collection's own queries WITHOUT their labels, two folds. Train on one
    half's queries (teacher labels: its top 3 documents as positives, a rank 10-30 document as the
    negative), together with the corpus arm's synthetic rows; score on the other half; swap."""
    import random

    import pandas as pd

    from grouprank.adaptation.recipe import RECIPES, query_log_rows
    from grouprank.adaptation.teacher import TEACHERS, Pools
    from grouprank.retriever_training.train import train_model
    t0 = time.time()
    s = arm.s
    order = list(qids)
    random.Random(s.seed).shuffle(order)
    folds = [sorted(order[0::2]), sorted(order[1::2])]
    pos = {q: i for i, q in enumerate(qids)}
    w = TEACHERS[res["teacher"]]
    rname = res["chosen"] if res["chosen"] != "base" else s.recipes[0]
    rec = RECIPES[rname]
    synth = arm.last_rows
    out = {"recipe": rname, "teacher": res["teacher"], "folds": []}
    for f in (0, 1):
        tr, te = folds[f], folds[1 - f]
        sub = Pools({k: v[[pos[q] for q in tr]] for k, v in sig.items()}, s.depth)
        rows = query_log_rows([qt[q] for q in tr], sub, arm.texts, w, positives=3, seed=s.seed + f)
        cols = ["anchor", "positive", "negative_1"] + (["label"] if "margin" in rec.loss else [])
        frame = pd.concat([rows[cols], synth[cols]], ignore_index=True)
        cfg = rec.train_config(max_steps=s.max_steps, train_tokens=s.train_tokens, eval_tokens=s.student_tokens)
        path = arm.work / "models" / f"query_log_{f}"
        train_model(frame, cfg, path, seed=s.seed)
        enc = arm.encoder(str(path), s.student_tokens, fresh=True)
        D = enc.encode_documents(arm.texts)
        Q = enc.encode_queries([qt[q] for q in te])
        qr = qrels[qrels.query_id.isin(te)]
        te_idx = [pos[q] for q in te]
        tpools = Pools({k: v[te_idx] for k, v in sig.items()}, s.depth)
        fold = {"train_queries": len(tr), "test_queries": len(te), "rows_query_log": len(rows),
                "rows_synthetic": len(synth),
                "base": score_run(te, arm.ids, sig["minilm"][te_idx], qr),
                "corpus_arm": score_run(te, arm.ids, (arm.encoder(res["model_dir"], s.student_tokens)
                                                      .encode_queries([qt[q] for q in te]) @
                                                      (arm.student_vectors.get(res["chosen"], None)
                                                       if res["chosen"] != "base" else arm.corpus_vectors("minilm")).T), qr),
                "query_log_arm": score_run(te, arm.ids, Q @ D.T, qr),
                "teacher": score_run(te, arm.ids, [tpools.ranking(i, w) for i in range(len(te))], qr, dense=False)}
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
        cols[r["collection"]] = r
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
