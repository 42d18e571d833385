"""Teachers and recipes for the retriever's synthetic data, measured on SciFact TRAIN claims only.

    .venv/bin/python bench/retriever_teachers.py --out FILE                      # teachers' agreement
    .venv/bin/python bench/retriever_teachers.py --out FILE --train A B ...      # + recipe variants

1. Teachers. For every train claim with qrels, the pool is its hybrid top 50 (BM25 + all-MiniLM-L6-v2,
   min-max fused over the union of both top-100 lists, the retrieve stage's fusion). Each signal ranks
   the pool and is scored against the claims' human train qrels (nDCG@10, and precision of its top
   document): minilm (the student), mpnet (all-mpnet-base-v2 at `--mpnet-tokens`, the independent
   teacher), bm25, their fusions, and the local judge's shipped DL19 calibrations
   (`grouprank.judges.local_calibration`) applied to the same pools. No SciFact label fits anything.
2. Recipes (`--train`). A seeded 20 % of the train claims kept by a mining run (`--mined`, the
   leakage-guarded claims) is held out; all-MiniLM-L6-v2 is fine-tuned (MNRL, batch 32, 160 tokens,
   bf16 where native, one epoch) on the other 80 % and scored on the held-out claims against their
   human qrels, dense retrieval over the whole corpus. Per claim: positive = the teacher's top
   document, hard negative = its document at `--neg-rank`. Variants:
     judge      the mpnet judge's ranking (mpnet + hybrid, shipped calibration)
     hybrid     the retrieval's hybrid (contains the student)
     human      the claims' human qrels (negative: the pool's document at --neg-rank that humans did not cite)
     judge+x    judge, plus `--extract` extractive sentence queries (grouprank.queries.extractive) from
                documents sampled away from the held-out claims' evidence, their source document the
                positive (stripped of the sentence), the judge's --neg-rank document the negative
     judge+xk   the same, the source document kept whole
   and `base` (no training).

Embeddings are cached in `--work-dir` (MiniLM at 256 tokens and mpnet over the corpus: ~4 min each in
bf16 on 2 cores the first time).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from _common import ROOT, setup, write_report  # noqa: E402  (bench/_common.py)

setup("retriever_teachers")


def encode_cached(work: Path, name: str, model: str, tokens: int, docs: list[str], queries: list[str]):
    import numpy as np

    from grouprank.first_stage.dense import get_encoder
    f = work / f"{name}_{tokens}.npz"
    if f.exists():
        z = np.load(f)
        if z["D"].shape[0] == len(docs) and z["Q"].shape[0] == len(queries):
            return z["D"], z["Q"]
    enc = get_encoder(model, "auto", max_seq_length=tokens)
    D = enc.encode_documents(docs)
    Q = enc.encode_queries(queries)
    np.savez(f, D=D, Q=Q)
    return D, Q


def pools(coll, qids, work: Path, mpnet_tokens: int, depth: int = 50):
    """{query_id: DataFrame(doc_id, bm25, minilm, mpnet, hybrid) in hybrid order} for `qids`."""
    import numpy as np
    import pandas as pd

    from grouprank.first_stage.bm25 import BM25Retriever
    from grouprank.text import document_text_map
    texts = document_text_map(coll.documents)
    ids = list(texts)
    docs = [texts[i] for i in ids]
    qtext = dict(zip(coll.queries["query_id"].to_pylist(), coll.queries["text"].to_pylist()))
    qs = [qtext[q] for q in qids]
    Dm, Qm = encode_cached(work, "minilm", "all-MiniLM-L6-v2", 256, docs, qs)
    Dp, Qp = encode_cached(work, "mpnet", "all-mpnet-base-v2", mpnet_tokens, docs, qs)
    bm = BM25Retriever().index(ids, docs)
    out = {}
    for i, q in enumerate(qids):
        b, mi, mp = bm.scores(qs[i]), Dm @ Qm[i], Dp @ Qp[i]
        u = np.union1d(np.argsort(-b)[:100], np.argsort(-mi)[:100])

        def mm(x):
            return (x[u] - x[u].min()) / (x[u].max() - x[u].min() + 1e-9)
        hyb = 0.5 * mm(b) + 0.5 * mm(mi)
        top = np.argsort(-hyb)[:depth]
        sel = u[top]
        out[q] = pd.DataFrame({"doc_id": [ids[j] for j in sel], "bm25": b[sel], "minilm": mi[sel],
                               "mpnet": mp[sel], "hybrid": hyb[top]})
    return out, texts, bm, (ids, Dp), qtext


def teacher_scores(P):
    """name -> function(pool frame) -> scores; the shipped judges through their calibrations."""
    from grouprank.judges.local_calibration import FEATURES_BASE, FEATURES_MPNET, default_calibration
    from grouprank.judges.local_scorer import feature_matrix

    def judge(features):
        cal = default_calibration(features)
        return lambda g: cal.eta(feature_matrix(features, {f: g[f].values for f in ("minilm", "mpnet", "bm25")}))

    def mm(x):
        return (x - x.min()) / (x.max() - x.min() + 1e-9)
    return {"minilm (student)": lambda g: g.minilm.values, "mpnet": lambda g: g.mpnet.values,
            "bm25": lambda g: g.bm25.values, "hybrid bm25+minilm (retrieval)": lambda g: g.hybrid.values,
            "bm25+mpnet min-max": lambda g: (mm(g.bm25) + mm(g.mpnet)).values,
            "judge default (minilm, minilm_z, bm25_z; DL19)": judge(FEATURES_BASE),
            "judge mpnet (mpnet, hybrid; DL19)": judge(FEATURES_MPNET)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--work-dir", default=str(ROOT / "grouprank_output" / "retriever_teachers"))
    ap.add_argument("--mpnet-tokens", type=int, default=128)
    ap.add_argument("--train", nargs="*", default=[], choices=["base", "judge", "hybrid", "human", "judge+x", "judge+xk"])
    ap.add_argument("--mined", default=str(ROOT / "grouprank_output" / "mine_queries" / "mined_queries.parquet"),
                    help="a mining run's QUERIES table: its kept train claims are the ones trained and held out")
    ap.add_argument("--extract", type=int, default=1000)
    ap.add_argument("--neg-rank", type=int, default=30)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--seed", type=int, default=13)
    a = ap.parse_args(argv)
    import pandas as pd

    from grouprank.collections import load_collection
    from grouprank.evaluation.metrics import evaluate
    work = Path(a.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    coll = load_collection("scifact")
    qr = coll.qrels.to_pandas()
    tr = qr[(qr.split == "train") & (qr.grade > 0)]
    qids = sorted(tr.query_id.unique())
    P, texts, bm, (ids, Dp), qtext = pools(coll, qids, work, a.mpnet_tokens)
    qrels = tr[["query_id", "doc_id", "grade"]]
    report: dict = {"claims": len(qids), "pool_depth": 50, "teachers": {}}
    T = teacher_scores(P)
    for name, fn in T.items():
        run = pd.concat([pd.DataFrame({"query_id": q, "doc_id": g.doc_id, "score": fn(g)}) for q, g in P.items()])
        top1 = run.sort_values("score", ascending=False).groupby("query_id").head(1)
        report["teachers"][name] = {
            "ndcg@10": round(float(evaluate(run, qrels, measures=("nDCG@10",))["nDCG@10"]), 4),
            "top1_precision": round(len(top1.merge(qrels, on=["query_id", "doc_id"])) / len(top1), 4)}
        print(f"{name:50s} {report['teachers'][name]}", flush=True)
    if a.train:
        report["recipes"] = train_variants(a, coll, P, texts, bm, ids, Dp, qtext, tr, T, work)
    report["wall_s"] = round(time.time() - t0, 1)
    write_report(a.out, report)
    print(json.dumps(report, indent=2))
    return 0


def train_variants(a, coll, P, texts, bm, ids, Dp, qtext, tr, T, work: Path) -> dict:
    import numpy as np
    import pandas as pd

    from grouprank.first_stage.dense import get_encoder
    from grouprank.queries.extractive import pick_sentence
    from grouprank.retriever_training.config import RetrieverTrainConfig
    from grouprank.retriever_training.evaluate import DenseEvaluator
    from grouprank.retriever_training.train import train_model
    from grouprank.text import strip_sentence
    mq = pd.read_parquet(a.mined)
    kept = sorted(set(mq[mq.decision == "kept"].query_id) & set(P))
    held = set(random.Random(a.seed).sample(kept, int(round(0.2 * len(kept)))))
    train_q = [q for q in kept if q not in held]
    ev = DenseEvaluator(coll.documents, {q: qtext[q] for q in held}, tr[tr.query_id.isin(held)],
                        backend="auto", measures=("nDCG@10",))
    judge = T["judge mpnet (mpnet, hybrid; DL19)"]
    out: dict = {"held_out_claims": len(held), "train_claims": len(train_q), "variants": {}}

    def ranked(q, fn):
        g = P[q]
        return g.doc_id.iloc[np.argsort(-np.asarray(fn(g)))].tolist()

    def claim_rows(fn):
        rows = []
        for q in train_q:
            r = ranked(q, fn)
            rows.append({"anchor": qtext[q], "positive": texts[r[0]], "negative_1": texts[r[min(a.neg_rank, len(r)) - 1]]})
        return rows

    def extract_rows(strip: bool):
        from grouprank.judges.local_scorer import pool_relative as z
        held_docs = set(tr[tr.query_id.isin(held)].doc_id)
        docs = coll.documents.to_pandas().set_index("doc_id")
        cand = [d for d in ids if d not in held_docs]
        random.Random(a.seed + 1).shuffle(cand)
        picked = []
        for d in cand:
            s = pick_sentence(str(docs.loc[d, "text"]))
            if s:
                picked.append((d, s))
            if len(picked) >= a.extract:
                break
        enc = get_encoder("all-mpnet-base-v2", "auto", max_seq_length=a.mpnet_tokens)
        Q = enc.encode_queries([s for _, s in picked])
        from grouprank.judges.local_calibration import FEATURES_MPNET, default_calibration
        cal = default_calibration(FEATURES_MPNET)
        rows = []
        for (d, s), qv in zip(picked, Q):
            b, mp = bm.scores(s), Dp @ qv
            u = np.union1d(np.argsort(-b)[:100], np.argsort(-mp)[:100])
            X = np.stack([mp[u] * 0, mp[u], b[u] * 0, z(mp[u]) + z(b[u])], 1)
            order = [ids[j] for j in u[np.argsort(-cal.eta(X))][:50] if ids[j] != d]
            pos = strip_sentence(texts[d], s) if strip else texts[d]
            rows.append({"anchor": s, "positive": pos, "negative_1": texts[order[min(a.neg_rank, len(order)) - 1]]})
        return rows

    for v in a.train:
        t = time.time()
        if v == "base":
            res = ev.evaluate("all-MiniLM-L6-v2")
            out["variants"][v] = {"nDCG@10": round(res["nDCG@10"], 4), "rows": 0}
            continue
        if v == "human":
            rows = []
            for q in train_q:
                pos = set(tr[tr.query_id == q].doc_id)
                r = P[q].doc_id.tolist()
                negs = [d for d in r if d not in pos]
                for p in sorted(pos):
                    rows.append({"anchor": qtext[q], "positive": texts[p],
                                 "negative_1": texts[negs[min(a.neg_rank, len(negs)) - 1]]})
        elif v == "hybrid":
            rows = claim_rows(lambda g: g.hybrid.values)
        else:
            rows = claim_rows(judge)
            if v in ("judge+x", "judge+xk"):
                rows += extract_rows(strip=v == "judge+x")
        cfg = RetrieverTrainConfig(lr=a.lr, bf16=True, train_max_seq_length=160, checkpoint_steps=0)
        r = train_model(pd.DataFrame(rows), cfg, work / f"model_{v}", seed=a.seed)
        res = ev.evaluate(str(r.model_dir), fresh=True)
        out["variants"][v] = {"nDCG@10": round(res["nDCG@10"], 4), "rows": len(rows),
                              "train_loss": r.train_loss, "wall_s": round(time.time() - t, 1)}
        print(v, out["variants"][v], flush=True)
    return out


if __name__ == "__main__":
    sys.exit(main())
