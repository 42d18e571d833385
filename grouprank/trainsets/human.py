"""LABELS from human qrels, so the same builders and exports run on human judgments (the
reference that synthesized data is compared against, and the tests' real data).

grade = the human grade; fused_score = grade + 0.5 · (1 − (r − 1)/n) where r is the document's
retrieval rank among the query's n candidates (0 for a judged document not retrieved), so the
fused order is by grade, then by retrieval rank; method "human_qrels"; judge_scores {"human": grade}.
"""
from __future__ import annotations

import json

import pyarrow as pa

from data_schemas import LABELS

from .common import candidate_order


def labels_from_qrels(qrels: pa.Table, candidates: pa.Table | None = None, *, query_ids=None) -> pa.Table:
    keep = set(map(str, query_ids)) if query_ids is not None else None
    order = candidate_order(candidates) if candidates is not None else {}
    per: dict[str, dict[str, int]] = {}
    for q, d, g in zip(qrels.column("query_id").to_pylist(), qrels.column("doc_id").to_pylist(),
                       qrels.column("grade").to_pylist()):
        q, d = str(q), str(d)
        if keep is not None and q not in keep:
            continue
        per.setdefault(q, {})
        per[q][d] = max(int(g), per[q].get(d, int(g)))
    rows = []
    for q in sorted(per):
        ranks = {d: i for i, d in enumerate(order.get(q, []), 1)}
        n = max(1, len(ranks))
        scored = []
        for d, g in per[q].items():
            r = ranks.get(d)
            s = g + (0.5 * (1.0 - (r - 1) / n) if r is not None else 0.0)
            scored.append((-s, d, g, s))
        scored.sort()
        prev, prev_rank = None, 0
        for i, (neg, d, g, s) in enumerate(scored, 1):
            rank = prev_rank if neg == prev else i
            prev, prev_rank = neg, rank
            rows.append({"query_id": q, "doc_id": d, "grade": g, "fused_score": float(s), "fused_rank": rank,
                         "method": "human_qrels", "n_judges": 1, "judge_scores": json.dumps({"human": g})})
    return LABELS.from_records(rows)
