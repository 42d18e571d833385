"""The final test of an adaptation: the collection's own judged queries and qrels, read only after the
arm has chosen everything (they never train or choose). nDCG@10 of dense retrieval over the whole
corpus for the students; the teachers rank their pools (BM25 / mpnet / MiniLM top `depth`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .teacher import TEACHERS, Pools


def judged_queries(queries, qrels, split: str | None = None) -> tuple[dict[str, str], pd.DataFrame]:
    """({query_id: text} of the queries with a positive grade, qrels rows query_id/doc_id/grade);
    `split` keeps that qrels split only (SciFact: its test claims)."""
    qr = qrels.to_pandas() if hasattr(qrels, "to_pandas") else pd.DataFrame(qrels)
    if split:
        qr = qr[qr.split == split]
    qr = qr[["query_id", "doc_id", "grade"]]
    judged = set(qr[qr.grade > 0].query_id)
    qt = {q: t for q, t in zip(queries["query_id"].to_pylist(), queries["text"].to_pylist()) if q in judged}
    return qt, qr


def ndcg10(qids: Sequence[str], doc_ids: Sequence[str], rankings, qrels: pd.DataFrame) -> float:
    """nDCG@10 (ir_measures) of per-query rankings: a score matrix [n_queries, n_docs] or a list of
    (corpus positions best first, scores)."""
    from grouprank.evaluation.metrics import evaluate
    rows = []
    for i, q in enumerate(qids):
        if isinstance(rankings, np.ndarray):
            top = np.argpartition(-rankings[i], min(100, rankings.shape[1] - 1))[:100]
            sc = rankings[i, top]
        else:
            top, sc = rankings[i][0][:100], rankings[i][1][:100]
        rows.append(pd.DataFrame({"query_id": q, "doc_id": [doc_ids[j] for j in top], "score": sc}))
    run = pd.concat(rows, ignore_index=True)
    return round(float(evaluate(run, qrels, measures=("nDCG@10",))["nDCG@10"]), 4)


def test_arm(arm, res: dict, qt: dict[str, str], qrels: pd.DataFrame) -> dict:
    """Every candidate teacher and recipe of `arm.run()`'s result `res` on the judged queries `qt`:
    {"teachers": {name: nDCG@10}, "recipes": {"base" | recipe: nDCG@10}, "signals": raw scores}."""
    qids = sorted(qt)
    texts = [qt[q] for q in qids]
    sig = arm.signal_scores(texts)
    pools = Pools(sig, arm.s.depth)
    out = {"teachers": {n: ndcg10(qids, arm.ids, [pools.ranking(i, w) for i in range(len(qids))], qrels)
                        for n, w in TEACHERS.items()},
           "recipes": {"base": ndcg10(qids, arm.ids, sig["minilm"], qrels)}}
    for rname in arm.student_vectors:
        Q = arm.encoder(res["models"][rname], arm.student.tokens).encode_queries(texts)
        out["recipes"][rname] = ndcg10(qids, arm.ids, Q @ arm.student_vectors[rname].T, qrels)
    out["signals"], out["query_ids"] = sig, qids
    return out


def side_by_side(res: dict, test: dict) -> dict:
    """Each candidate's held-out synthetic nDCG@10 next to its test nDCG@10 (does synthetic validation
    pick well?)."""
    val = res["validation"]
    side = {"teachers": {n: {"held_out_synthetic_nDCG@10": val["teachers"].get(n, {}).get("nDCG@10"),
                             "test_nDCG@10": test["teachers"][n]} for n in TEACHERS},
            "recipes": {n: {"held_out_synthetic_nDCG@10": val["recipes"][n]["nDCG@10"],
                            "test_nDCG@10": test["recipes"][n]} for n in test["recipes"]}}
    side["teachers"]["minilm"]["held_out_synthetic_nDCG@10"] = val["recipes"]["base"]["nDCG@10"]
    return side


def headline(res: dict, test: dict) -> dict:
    """base, adapted (the chosen recipe), teacher (the chosen one) and the gap closed."""
    base, adapted = test["recipes"]["base"], test["recipes"][res["chosen"]]
    teacher = test["teachers"][res["teacher"]]
    return {"base": base, "adapted": adapted, "delta": round(adapted - base, 4), "teacher": teacher,
            "teacher_name": res["teacher"], "chosen_recipe": res["chosen"],
            "gap_closed": round((adapted - base) / (teacher - base), 3) if teacher - base > 1e-9 else None}
