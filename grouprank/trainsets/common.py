"""Shared pieces of the dataset builders: input tables, labels (per-query randomness:
`grouprank.scoring.rng.seeded_rng`).

A document's text is `grouprank.text.document_text_map` (the text every stage sees)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa


def as_table(x: Any, table_def=None) -> pa.Table | None:
    """Path (Parquet, read and schema-checked through `table_def`), pandas DataFrame or Arrow table."""
    if x is None:
        return None
    if isinstance(x, pa.Table):
        return x
    if isinstance(x, (str, Path)):
        if table_def is not None:
            return table_def.read(x)
        import pyarrow.parquet as pq
        return pq.read_table(x)
    import pandas as pd
    if isinstance(x, pd.DataFrame):
        return pa.Table.from_pandas(x, preserve_index=False)
    raise TypeError(f"expected a Parquet path, an Arrow table or a DataFrame, got {type(x).__name__}")


def kept_queries(queries: pa.Table) -> dict[str, str]:
    """query_id -> text for queries whose `decision` is "kept" (all queries if no such column)."""
    qids = [str(q) for q in queries.column("query_id").to_pylist()]
    texts = queries.column("text").to_pylist()
    if "decision" in queries.column_names:
        dec = queries.column("decision").to_pylist()
    else:
        dec = ["kept"] * len(qids)
    return {q: t for q, t, d in zip(qids, texts, dec) if d == "kept" and t}


@dataclass
class QueryLabels:
    """One query's labelled documents, in fused order (best first)."""

    query_id: str
    doc_ids: list[str]
    grades: dict[str, int]
    fused: dict[str, float]
    fused_rank: dict[str, int]
    extra: dict = field(default_factory=dict)

    def norm_fused(self) -> dict[str, float]:
        """Per-query min-max normalised fused score in [0, 1] (all equal -> all 0)."""
        vals = list(self.fused.values())
        lo, hi = min(vals), max(vals)
        if hi <= lo:
            return {d: 0.0 for d in self.fused}
        return {d: (v - lo) / (hi - lo) for d, v in self.fused.items()}


def labels_by_query(labels: pa.Table) -> dict[str, QueryLabels]:
    """LABELS -> {query_id: QueryLabels}, documents ordered by (fused_rank, -fused_score, doc_id)."""
    cols = {c: labels.column(c).to_pylist() for c in ("query_id", "doc_id", "grade", "fused_score", "fused_rank")}
    per: dict[str, list[tuple]] = {}
    for q, d, g, s, r in zip(cols["query_id"], cols["doc_id"], cols["grade"], cols["fused_score"], cols["fused_rank"]):
        per.setdefault(str(q), []).append((int(r), -float(s), str(d), int(g), float(s)))
    out: dict[str, QueryLabels] = {}
    for q, rows in per.items():
        rows.sort()
        out[q] = QueryLabels(q, [r[2] for r in rows], {r[2]: r[3] for r in rows}, {r[2]: r[4] for r in rows},
                             {r[2]: r[0] for r in rows})
    return out


def candidate_order(candidates: pa.Table | None) -> dict[str, list[str]]:
    """query_id -> candidate doc ids in retrieval order (CANDIDATES.rank, then doc_id)."""
    if candidates is None:
        return {}
    q = candidates.column("query_id").to_pylist()
    d = candidates.column("doc_id").to_pylist()
    r = candidates.column("rank").to_pylist()
    per: dict[str, list[tuple[int, str]]] = {}
    for qi, di, ri in zip(q, d, r):
        per.setdefault(str(qi), []).append((int(ri), str(di)))
    out = {}
    for qi, rows in per.items():
        rows.sort()
        seen: set[str] = set()
        out[qi] = [di for _, di in rows if not (di in seen or seen.add(di))]
    return out


def counter_add(stats: Mapping, key: str, n: int = 1) -> None:
    stats[key] = stats.get(key, 0) + n  # type: ignore[index]


def injection_flagged_pairs(judgments: pa.Table | None) -> set[tuple[str, str]]:
    """(query_id, doc_id) pairs that at least one JUDGMENTS row flags (`injection_flag` true:
    the document carries text aimed at the judge, grouprank.judges.injection). Empty without a
    judgments table or without the column."""
    if judgments is None or judgments.num_rows == 0 or "injection_flag" not in judgments.column_names:
        return set()
    return {(str(q), str(d)) for q, d, f in zip(judgments.column("query_id").to_pylist(),
                                                 judgments.column("doc_id").to_pylist(),
                                                 judgments.column("injection_flag").to_pylist()) if f}


# judges whose prompt holds several documents: a flagged document was in view when the others of
# its prompt were judged, so their labels are as suspect as its own
_MULTI_DOC_KINDS = ("listwise", "groupwise")


def _prompt_key(row: Mapping) -> tuple | None:
    """The prompt a multi-document judge row was answered in: (query, judge, pass, request hash,
    group without the `#position` suffix); None for a one-document prompt or an unsent pair."""
    if row["kind"] not in _MULTI_DOC_KINDS or not row["request_hash"]:
        return None
    group = (row["group_id"] or "").split("#", 1)[0]
    return (str(row["query_id"]), row["judge_id"], row["pass_index"], row["request_hash"], group)


def injection_neighbour_pairs(judgments: pa.Table | None, flagged: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """(query_id, doc_id) pairs judged in the same listwise/groupwise prompt as a `flagged` pair
    (the flagged pairs themselves excluded)."""
    if not flagged or judgments is None or judgments.num_rows == 0:
        return set()
    cols = ("query_id", "doc_id", "judge_id", "kind", "pass_index", "group_id", "request_hash")
    rows = judgments.select(list(cols)).to_pylist()
    tainted = {k for r in rows if (str(r["query_id"]), str(r["doc_id"])) in flagged
               for k in [_prompt_key(r)] if k is not None}
    return {(str(r["query_id"]), str(r["doc_id"])) for r in rows if _prompt_key(r) in tainted} - flagged


def injection_excluded_pairs(judgments: pa.Table | None, exclude: bool = True) -> tuple[set, set]:
    """-> (flagged pairs, their same-prompt neighbours): what `datasets.exclude_injection_flagged`
    keeps out of every training view and every exported label file (both empty when `exclude` is off
    for the neighbours; the flagged set is still returned for the counts)."""
    flagged = injection_flagged_pairs(judgments)
    return flagged, (injection_neighbour_pairs(judgments, flagged) if exclude else set())


def drop_pairs(labels: Mapping[str, QueryLabels], pairs: set[tuple[str, str]]) -> tuple[dict[str, QueryLabels], int]:
    """`labels` without the (query_id, doc_id) `pairs` (a query left with no document is dropped);
    -> (labels, number of labelled pairs removed)."""
    out: dict[str, QueryLabels] = {}
    removed = 0
    for q, ql in labels.items():
        keep = [d for d in ql.doc_ids if (q, d) not in pairs]
        removed += len(ql.doc_ids) - len(keep)
        if len(keep) == len(ql.doc_ids):
            out[q] = ql
        elif keep:
            out[q] = QueryLabels(q, keep, {d: ql.grades[d] for d in keep}, {d: ql.fused[d] for d in keep},
                                 {d: ql.fused_rank[d] for d in keep}, dict(ql.extra))
    return out, removed
