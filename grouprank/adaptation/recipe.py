"""Training rows from teacher-labelled pseudo-queries, and the candidate recipes.

A pseudo-query's source document is its positive only when the teacher agrees (the source is in the
teacher's top `keep_top` for the query: Promptagator's round-trip consistency filter, with the
teacher as the retriever); its hard negative is a document the teacher ranks in `neg_ranks` (GPL
mines them from a retriever; ranks 10-30 keep clear of unlabeled positives at the very top: the
false-negative guard). Each row carries the teacher's margin (combined standard score of positive
minus negative, times `margin_scale`) for the MarginMSE recipes (GPL's distillation target).
Trivial pairs (`pseudo_queries.trivial`) never become rows.
"""
from __future__ import annotations

import random
from typing import Mapping, Sequence

import pandas as pd

from .choices import RECIPES, Recipe  # noqa: F401  (re-exported: the candidates)
from .pseudo_queries import PseudoQuery
from .teacher import Pools, rank_of


def training_rows(queries: Sequence[PseudoQuery], pools: Pools, targets: Sequence[int], corpus: Sequence[str],
                  weights: Mapping[str, float], *, keep_top: int = 3, neg_ranks: tuple[int, int] = (10, 30),
                  margin_scale: float = 0.1, seed: int = 13,
                  doc_ids: Sequence[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """(rows anchor, positive, negative_1, label=[margin], query_id, kind, positive_doc_id,
    negative_doc_id; stats) for the non-trivial queries whose source the teacher ranks in its top
    `keep_top`. `corpus`: the texts negatives are taken from; `doc_ids`: their ids (corpus order)."""
    rng = random.Random(seed)
    rows, stats = [], {"queries": len(queries), "trivial": 0, "teacher_disagrees": 0, "no_negative": 0}
    for i, (q, t) in enumerate(zip(queries, targets)):
        if q.trivial:
            stats["trivial"] += 1
            continue
        order, score = pools.ranking(i, weights)
        r = rank_of(order, int(t))
        if r is None or r > keep_top:
            stats["teacher_disagrees"] += 1
            continue
        lo, hi = neg_ranks
        cand = [j for j in range(lo - 1, min(hi, len(order))) if order[j] != t]
        if not cand:
            stats["no_negative"] += 1
            continue
        j = rng.choice(cand)
        neg = int(order[j])
        rows.append({"anchor": q.text, "positive": q.positive, "negative_1": corpus[neg],
                     "label": [float(margin_scale * (score[r - 1] - score[j]))], "query_id": q.query_id,
                     "kind": q.kind, "positive_doc_id": q.doc_id,
                     "negative_doc_id": str(doc_ids[neg]) if doc_ids is not None else str(neg)})
    stats["rows"] = len(rows)
    return pd.DataFrame(rows, columns=["anchor", "positive", "negative_1", "label", "query_id", "kind",
                                       "positive_doc_id", "negative_doc_id"]), stats


def query_log_rows(queries: Sequence[str], pools: Pools, corpus: Sequence[str], weights: Mapping[str, float], *,
                   positives: int = 1, neg_ranks: tuple[int, int] = (10, 30), margin_scale: float = 0.1,
                   seed: int = 13) -> pd.DataFrame:
    """The query-log arm's rows: real queries without labels, the teacher's top `positives` documents
    as positives and a document of its ranks `neg_ranks` as the hard negative (with the margin)."""
    rng = random.Random(seed)
    rows = []
    for i, q in enumerate(queries):
        order, score = pools.ranking(i, weights)
        lo, hi = neg_ranks
        cand = list(range(lo - 1, min(hi, len(order))))
        if not cand:
            continue
        for p in range(min(positives, len(order))):
            j = rng.choice(cand)
            rows.append({"anchor": q, "positive": corpus[int(order[p])], "negative_1": corpus[int(order[j])],
                         "label": [float(margin_scale * (score[p] - score[j]))]})
    return pd.DataFrame(rows, columns=["anchor", "positive", "negative_1", "label"])
