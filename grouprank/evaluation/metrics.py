"""Ranking metrics computed by `ir-measures` (what is measured is named by ir-measures specs,
how it is computed is left to its providers).

Gain convention: nDCG uses trec_eval's *linear* gain (gain = grade) with log2 discount, the
ir-measures/trec_eval default; grades follow the project convention (higher = more relevant,
0 = not relevant). Binary measures (R@k, RR, AP) count grade >= `rel` as relevant (default 1;
TREC DL uses 2).

BRIGHT protocol: a query's `excluded_ids` are removed from its run before scoring.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import pandas as pd

DEFAULT_MEASURES = ("nDCG@10", "R@100", "RR@10", "AP")


def _parse(measures: Iterable[str], rel: int):
    import ir_measures
    out = []
    for m in measures:
        spec = m
        if rel != 1 and m.split("@")[0] in ("R", "RR", "AP", "P") and "(" not in m:
            name, _, cut = m.partition("@")
            spec = f"{name}(rel={rel})" + (f"@{cut}" if cut else "")
        out.append((m, ir_measures.parse_measure(spec)))
    return out


def _to_frames(run, qrels) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not isinstance(run, pd.DataFrame):
        run = run.to_pandas()
    if not isinstance(qrels, pd.DataFrame):
        qrels = qrels.to_pandas()
    r = pd.DataFrame({"query_id": run["query_id"].astype(str), "doc_id": run["doc_id"].astype(str),
                      "score": run["score"].astype(float)})
    q = pd.DataFrame({"query_id": qrels["query_id"].astype(str), "doc_id": qrels["doc_id"].astype(str),
                      "relevance": qrels["grade" if "grade" in qrels else "relevance"].astype(int)})
    return r, q


def remove_excluded(run: pd.DataFrame, excluded: Mapping[str, set[str]] | None) -> pd.DataFrame:
    if not excluded:
        return run
    mask = [d in excluded.get(q, ()) for q, d in zip(run["query_id"], run["doc_id"])]
    return run[~pd.Series(mask, index=run.index)]


def evaluate(run, qrels, measures: Sequence[str] = DEFAULT_MEASURES, *, rel: int = 1,
             excluded: Mapping[str, set[str]] | None = None, per_query: bool = False,
             judged_only: bool = True):
    """Mean of each measure over the queries that have qrels (and, by default, only those).

    run: DataFrame/Arrow with query_id, doc_id, score. qrels: query_id, doc_id, grade.
    Queries in qrels that are missing from the run count as 0 (trec_eval -c behaviour).
    Returns {measure: value}, or (that, per-query DataFrame) with per_query=True."""
    import ir_measures
    r, q = _to_frames(run, qrels)
    r = remove_excluded(r, excluded)
    judged = sorted(set(q["query_id"]))
    if judged_only:
        r = r[r["query_id"].isin(set(judged))]
    parsed = _parse(measures, rel)
    rows = []
    for name, m in parsed:
        per = {qid: 0.0 for qid in judged}
        for res in ir_measures.iter_calc([m], q, r):
            if res.query_id in per:
                per[res.query_id] = float(res.value)
        for qid, v in per.items():
            rows.append({"measure": name, "query_id": qid, "value": v})
    pq_df = pd.DataFrame(rows, columns=["measure", "query_id", "value"])
    agg = {name: float(pq_df[pq_df["measure"] == name]["value"].mean()) if judged else 0.0 for name, _ in parsed}
    return (agg, pq_df) if per_query else agg


def metrics_table(agg: Mapping[str, float], *, system: str, collection: str, split: str, n_queries: int):
    from data_schemas import METRICS
    return METRICS.from_records([{"system": system, "collection": collection, "split": split, "measure": k,
                                  "query_id": None, "value": float(v), "n_queries": n_queries}
                                 for k, v in agg.items()])
