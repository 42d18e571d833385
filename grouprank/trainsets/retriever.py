"""Retriever examples: (query, positive, hard negatives) with a false-negative guard.

Per kept query with labels:

* positives: labelled documents with grade >= `positive_grade`, best fused rank first (capped at
  `max_positives_per_query`); one example per positive. A query with none takes its best-fused
  document when that has grade >= `positive_fallback_grade` (None: no fallback); counted as
  `positives_from_fallback`. A query usually has a relevant document the judges grade below the
  positive grade (a SciFact claim always cites one), and leaving the query out starves training;
* negative pool: the query's retrieval candidates in retrieval order (CANDIDATES.rank: the hybrid
  BM25 + dense ranking), from rank `negative_min_rank` on: the first survivors are the highest-ranked
  documents past that rank. Without a candidates table the labelled documents in fused order are used
  (and the card says so);
* the guard removes, in this order, and counts per rule (`guard_<rule>`: candidate documents
  removed for the query; the margin rule is per positive and counts (positive, candidate) pairs):
    1. `unlabelled`            — no fused grade: nobody judged it, so it may be relevant;
    2. `grade_at_or_above_positive` — grade >= positive_grade: a positive, never a negative;
    3. `grade_above_negative_max`  — negative_max_grade < grade < positive_grade: ambiguous middle grades;
    4. `duplicate_text`        — same text (whitespace/case-normalised) as one of the query's positives;
    4b. `human_positive`       — only with `human` (query id -> doc ids humans cited as relevant, from
       the collection's qrels, when the query carries them and `datasets.human_guard` allows it): a
       document humans cite for the query is never its hard negative, whatever the synthetic grade.
       Counted after rules 1–4, so the count is the human positives the synthetic labels alone
       would have exported as negatives; `human_disagreement` in the stats reports them;
    5. `fused_margin` (pairs)  — normalised fused score >= the positive's − margin (scores min-max
       normalised per query over its labelled documents, since fusion methods differ in scale):
       the judges barely separate it from the positive;
* the first `negatives_per_example` survivors are the example's hard negatives;
* an extractive query (`grouprank.queries.extractive`: a sentence of its source document) whose
  positive is its source document gets that document without the sentence (`strip`; counted as
  `positives_sentence_removed`): a verbatim copy would teach string matching.

Invariant (property-tested): no emitted negative has grade >= positive_grade or is unlabelled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import pyarrow as pa

from data_schemas import RETRIEVER_EXAMPLES

from grouprank.queries import extractive
from grouprank.text import strip_sentence

from .common import QueryLabels, counter_add

RULES = ("unlabelled", "grade_at_or_above_positive", "grade_above_negative_max", "duplicate_text", "human_positive")


@dataclass(frozen=True)
class GuardSpec:
    positive_grade: int = 2
    negative_max_grade: int = 0
    margin: float = 0.05
    negatives: int = 4
    max_positives: int | None = None
    fallback_grade: int | None = None
    negative_min_rank: int = 1

    @classmethod
    def from_config(cls, dc) -> "GuardSpec":
        if dc.negative_max_grade >= dc.positive_grade:
            raise ValueError(f"negative_max_grade {dc.negative_max_grade} must be below positive_grade "
                             f"{dc.positive_grade}")
        return cls(dc.positive_grade, dc.negative_max_grade, dc.false_negative_margin,
                   dc.negatives_per_example, dc.max_positives_per_query, dc.positive_fallback_grade,
                   dc.negative_min_rank)


def duplicate_text_key(t: str) -> str:
    """The `duplicate_text` rule's key: lower-cased, whitespace collapsed (two documents with the
    same key are the same text)."""
    return " ".join(t.lower().split())


def guard_pool(ql: QueryLabels, pool: list[str], spec: GuardSpec, texts: Mapping[str, str] | None,
               positives: list[str], stats: dict | None = None,
               human_positives: set[str] | frozenset = frozenset()) -> list[str]:
    """Rules 1–4b (independent of which positive): the query's eligible negatives, pool order kept
    (then `margin_filter` per positive). `human_positives`: documents humans cite for this query."""
    stats = stats if stats is not None else {}
    pos_texts = {duplicate_text_key(texts[p]) for p in positives if texts and p in texts}
    out: list[str] = []
    for d in pool:
        g = ql.grades.get(d)
        if g is None:
            counter_add(stats, "guard_unlabelled")
            continue
        if g >= spec.positive_grade:
            counter_add(stats, "guard_grade_at_or_above_positive")
            continue
        if g > spec.negative_max_grade:
            counter_add(stats, "guard_grade_above_negative_max")
            continue
        if texts is not None and d in texts and duplicate_text_key(texts[d]) in pos_texts:
            counter_add(stats, "guard_duplicate_text")
            continue
        if d in human_positives:
            counter_add(stats, "guard_human_positive")
            continue
        out.append(d)
    return out


def margin_filter(ql: QueryLabels, eligible: list[str], positive: str, spec: GuardSpec,
                  stats: dict | None = None, norm: Mapping[str, float] | None = None) -> list[str]:
    """Rule 5 for one positive: drop negatives whose normalised fused score is within the margin."""
    norm = norm if norm is not None else ql.norm_fused()
    limit = norm[positive] - spec.margin
    keep = [d for d in eligible if norm[d] < limit]
    if stats is not None and len(keep) < len(eligible):
        counter_add(stats, "guard_fused_margin_pairs", len(eligible) - len(keep))
    return keep


def extractive_sources(queries: pa.Table | None) -> dict[str, tuple[str, str]]:
    """Kept extractive queries -> (source doc id, query text): the positives to strip."""
    if queries is None or "generator_model" not in queries.column_names:
        return {}
    cols = [queries.column(c).to_pylist() for c in ("query_id", "text", "source_doc_id", "generator_model",
                                                     "decision")]
    return {str(q): (str(d), t) for q, t, d, m, dec in zip(*cols)
            if m == extractive.MODEL and d is not None and dec == "kept"}


def human_positive_map(qrels, query_ids) -> dict[str, set[str]]:
    """query id -> doc ids with a human grade >= 1, for the given (mined, kept) query ids only.
    `qrels`: a QRELS-like Arrow table (query_id, doc_id, grade), or None."""
    if qrels is None:
        return {}
    keep = set(map(str, query_ids))
    out: dict[str, set[str]] = {}
    for q, d, g in zip(qrels.column("query_id").to_pylist(), qrels.column("doc_id").to_pylist(),
                       qrels.column("grade").to_pylist()):
        if str(q) in keep and g is not None and int(g) >= 1:
            out.setdefault(str(q), set()).add(str(d))
    return out


def human_disagreement(labels: dict[str, QueryLabels], human: Mapping[str, set[str]], spec: GuardSpec) -> dict:
    """How the synthetic grades treat the human-cited (query, document) pairs the pools hold."""
    in_pools = below = 0
    by_grade: dict[str, int] = {}
    queries_below: set[str] = set()
    for q, docs in human.items():
        ql = labels.get(q)
        if ql is None:
            continue
        for d in docs:
            g = ql.grades.get(d)
            if g is None:
                continue
            in_pools += 1
            by_grade[str(int(g))] = by_grade.get(str(int(g)), 0) + 1
            if g < spec.positive_grade:
                below += 1
                queries_below.add(q)
    labelled = [q for q in human if q in labels]
    return {"queries_with_human_qrels": len(labelled),
            "human_positive_pairs": sum(len(human[q]) for q in labelled),
            "human_positive_pairs_labelled": in_pools, "synthetic_grade_of_human_positives": dict(sorted(by_grade.items())),
            "human_positives_below_positive_grade": below, "queries_with_such_pairs": len(queries_below)}


def build_retriever_examples(labels: dict[str, QueryLabels], queries: Mapping[str, str], docs: Mapping[str, str],
                             candidates: Mapping[str, list[str]] | None, spec: GuardSpec,
                             stats: dict | None = None,
                             human: Mapping[str, set[str]] | None = None,
                             strip: Mapping[str, tuple[str, str]] | None = None) -> tuple[pa.Table, dict]:
    """-> (RETRIEVER_EXAMPLES table, stats). `candidates`: query_id -> doc ids in retrieval order.
    `human`: query id -> human-cited doc ids (rule 4b; `human_positive_map`), or None.
    `strip`: extractive query id -> (source doc id, sentence) (`extractive_sources`)."""
    stats = stats if stats is not None else {}
    for r in RULES:
        stats.setdefault(f"guard_{r}", 0)
    stats.setdefault("guard_fused_margin_pairs", 0)
    stats.setdefault("guard_fused_margin_docs", 0)
    for k in ("negative_candidates_considered", "negative_candidates_eligible", "queries_without_positive",
              "queries_without_candidates", "positives_from_fallback", "positives_sentence_removed"):
        stats.setdefault(k, 0)
    stats["negative_order"] = "retrieval" if candidates else "fused_labels"
    rows: list[dict] = []
    n_full = 0
    for qid in sorted(labels):
        if qid not in queries:
            continue
        ql = labels[qid]
        positives = [d for d in ql.doc_ids if ql.grades[d] >= spec.positive_grade and d in docs]
        if spec.max_positives is not None:
            positives = positives[: spec.max_positives]
        if not positives and spec.fallback_grade is not None:
            best = next((d for d in ql.doc_ids if d in docs), None)
            if best is not None and ql.grades[best] >= spec.fallback_grade:
                positives = [best]
                counter_add(stats, "positives_from_fallback")
        if not positives:
            counter_add(stats, "queries_without_positive")
            continue
        if candidates:
            pool = candidates.get(qid, [])
            if not pool:
                counter_add(stats, "queries_without_candidates")
        else:
            pool = list(ql.doc_ids)
        pool = [d for d in pool[max(0, spec.negative_min_rank - 1):] if d in docs]
        counter_add(stats, "negative_candidates_considered", len(pool))
        eligible = guard_pool(ql, pool, spec, docs, positives, stats,
                              human_positives=(human or {}).get(qid, frozenset()))
        counter_add(stats, "negative_candidates_eligible", len(eligible))
        norm = ql.norm_fused()
        margin_dropped: set[str] = set()
        for p in positives:
            keep = margin_filter(ql, eligible, p, spec, stats, norm)
            margin_dropped |= set(eligible) - set(keep)
            negs = keep[: spec.negatives]
            n_full += len(negs) == spec.negatives
            text = docs[p]
            src = (strip or {}).get(qid)
            if src is not None and src[0] == p:
                text = strip_sentence(text, src[1])
                counter_add(stats, "positives_sentence_removed", int(text != docs[p]))
            rows.append({"query_id": qid, "anchor": queries[qid], "positive_doc_id": p, "positive": text,
                         "positive_grade": ql.grades[p], "negative_doc_ids": negs,
                         "negatives": [docs[d] for d in negs], "negative_grades": [ql.grades[d] for d in negs]})
        counter_add(stats, "guard_fused_margin_docs", len(margin_dropped))
    if human:
        stats["human_disagreement"] = {**human_disagreement(labels, human, spec),
                                       "human_positives_kept_out_of_negatives": stats["guard_human_positive"]}
    stats["retriever_examples"] = len(rows)
    stats["retriever_queries"] = len({r["query_id"] for r in rows})
    stats["retriever_examples_full_negatives"] = n_full
    return RETRIEVER_EXAMPLES.from_records(rows), stats


def select_examples(df, max_positives_per_query: int | None):
    """At most `max_positives_per_query` rows per query (a DataFrame with query_id, positive_grade):
    highest positive grade first, then the order the table gives (the builder writes positives
    best-first). The retriever training selects its rows with it; the dataset card counts them."""
    if not max_positives_per_query:
        return df
    d = df.assign(_ord=range(len(df)), _g=df["positive_grade"].fillna(-1).astype(int))
    d = d.sort_values(["query_id", "_g", "_ord"], ascending=[True, False, True], kind="mergesort")
    d = d.groupby("query_id", sort=False).head(int(max_positives_per_query))
    return d.sort_values("_ord").drop(columns=["_ord", "_g"]).reset_index(drop=True)
