"""What every judge shares: the pools to judge, and the JUDGMENTS rows it writes.

A judge turns pools (query -> candidate document ids) into JUDGMENTS rows: exactly one row per
(query, document, judge, pass), status "ok" with a raw score (0–10) or rank, or status "failed"
with the reason. Rows are never dropped and never duplicated (`check_complete`).

Token columns: a call that judges several pairs (listwise window, groupwise group) has its
prompt/completion tokens apportioned over those pairs (integer split, remainder to the first
ones), so summing the column over rows gives the calls' totals; a listwise pair that sat in
several windows carries its share of each.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterable

from grouprank.text import document_text_map

from .injection import detect

__all__ = ["JudgePool", "JudgeInfo", "RowBuilder", "apportion", "check_complete", "local_hash"]


@dataclass
class JudgePool:
    """Queries, document texts and, per query, the candidate doc ids to judge (in the
    candidates' rank order). A document's text is `grouprank.text.document_text(title, text)`,
    the string the retrievers and the reranker see too."""

    queries: dict[str, str]
    docs: dict[str, str]
    pools: dict[str, list[str]]
    _flags: dict[str, bool] = field(default_factory=dict, repr=False)

    @classmethod
    def from_tables(cls, candidates, documents, queries, *, max_per_query: int | None = None,
                    query_ids: Iterable[str] | None = None, max_query_chars: int | None = None) -> "JudgePool":
        """candidates: CANDIDATES (or any table with query_id, doc_id and optionally rank);
        documents: DOCUMENTS; queries: QUERIES. Arrow tables or pandas DataFrames.
        `max_query_chars` (`prompts.max_query_chars`): longer queries are cut, with a warning."""
        cand = candidates.to_pandas() if hasattr(candidates, "to_pandas") else candidates
        qs = queries.to_pandas() if hasattr(queries, "to_pandas") else queries
        if "rank" in cand.columns:
            cand = cand.sort_values(["query_id", "rank", "doc_id"], kind="mergesort")
        else:
            cand = cand.sort_values(["query_id", "doc_id"], kind="mergesort")
        keep = set(query_ids) if query_ids is not None else None
        pools: dict[str, list[str]] = {}
        for qid, did in zip(cand["query_id"].astype(str), cand["doc_id"].astype(str)):
            if keep is not None and qid not in keep:
                continue
            lst = pools.setdefault(qid, [])
            if did not in lst and (max_per_query is None or len(lst) < max_per_query):
                lst.append(did)
        qtext = dict(zip(qs["query_id"].astype(str), qs["text"].astype(str)))
        if max_query_chars:
            from grouprank.prompts.common import cut_queries
            qtext = cut_queries({q: qtext[q] for q in pools if q in qtext}, max_query_chars, "judge") | \
                {q: t for q, t in qtext.items() if q not in pools}
        needed = {d for lst in pools.values() for d in lst}
        if not hasattr(documents, "column_names"):  # pandas
            import pyarrow as pa
            documents = pa.Table.from_pandas(documents, preserve_index=False)
        dtext = document_text_map(documents, needed)
        from grouprank.errors import UserError
        missing_q = [q for q in pools if q not in qtext]
        if missing_q:
            raise UserError(f"candidates name {len(missing_q)} queries absent from the queries table "
                            f"(e.g. {missing_q[:3]})")
        missing_d = sorted(needed - set(dtext))
        if missing_d:
            raise UserError(f"candidates name {len(missing_d)} documents absent from the documents table "
                            f"(e.g. {missing_d[:3]})")
        return cls({q: qtext[q] for q in pools}, dtext, pools)

    @property
    def n_pairs(self) -> int:
        return sum(len(v) for v in self.pools.values())

    def pairs(self) -> list[tuple[str, str]]:
        return [(q, d) for q, lst in self.pools.items() for d in lst]

    def injection_flag(self, doc_id: str) -> bool:
        f = self._flags.get(doc_id)
        if f is None:
            f = self._flags[doc_id] = detect(self.docs[doc_id]).flagged
        return f

    def subset(self, query_ids: Iterable[str]) -> "JudgePool":
        ids = [q for q in query_ids if q in self.pools]
        return JudgePool({q: self.queries[q] for q in ids}, self.docs, {q: self.pools[q] for q in ids})


@dataclass(frozen=True)
class JudgeInfo:
    judge_id: str
    kind: str
    model: str
    template_version: str


def apportion(total: int | None, n: int) -> list[int | None]:
    if total is None or n <= 0:
        return [None] * max(n, 0)
    base, rem = divmod(int(total), n)
    return [base + (1 if i < rem else 0) for i in range(n)]


class RowBuilder:
    """Collects JUDGMENTS rows for one judge; refuses a second row for the same key."""

    def __init__(self, info: JudgeInfo, pool: JudgePool):
        self.info = info
        self.pool = pool
        self.rows: list[dict] = []
        self._seen: set[tuple] = set()

    def add(self, query_id: str, doc_id: str, *, pass_index: int = 0, group_id: str | None = None,
            score: float | None = None, rank: int | None = None, rationale: str | None = None,
            request_hash: str, status: str, error: str | None = None,
            prompt_tokens: int | None = None, completion_tokens: int | None = None) -> None:
        key = (query_id, doc_id, pass_index)
        if key in self._seen:
            raise RuntimeError(f"judge {self.info.judge_id}: second row for {key}")
        self._seen.add(key)
        if status == "ok" and score is None and rank is None:
            raise RuntimeError(f"judge {self.info.judge_id}: ok row without score or rank for {key}")
        if status == "failed" and not error:
            error = "failed (no reason given)"
        self.rows.append({
            "query_id": query_id, "doc_id": doc_id, "judge_id": self.info.judge_id,
            "kind": self.info.kind, "model": self.info.model,
            "template_version": self.info.template_version, "pass_index": int(pass_index),
            "group_id": group_id, "score": None if score is None else float(score),
            "rank": None if rank is None else int(rank),
            "rationale": rationale, "request_hash": request_hash, "status": status,
            "error": None if status == "ok" else error,
            "injection_flag": self.pool.injection_flag(doc_id),
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        })


def check_complete(rows: list[dict], pool: JudgePool, judge_id: str, passes: int = 1) -> None:
    """Every pair of the pool has exactly one row per pass for this judge."""
    want = {(q, d, p) for q, d in pool.pairs() for p in range(passes)}
    got: dict[tuple, int] = {}
    for r in rows:
        if r["judge_id"] != judge_id:
            continue
        k = (r["query_id"], r["doc_id"], r["pass_index"])
        got[k] = got.get(k, 0) + 1
    dup = [k for k, c in got.items() if c > 1]
    missing = want - set(got)
    extra = set(got) - want
    if dup or missing or extra:
        raise RuntimeError(f"judge {judge_id}: rows incomplete: {len(missing)} missing, {len(dup)} duplicated, "
                           f"{len(extra)} unexpected (e.g. {(list(missing) + dup + list(extra))[:3]})")


def local_hash(*parts: object) -> str:
    """Content hash for judgments made without an LLM request (local judge)."""
    s = json.dumps([str(p) for p in parts], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(s.encode("utf-8")).hexdigest()


def table_from_rows(rows: list[dict]):
    from data_schemas import JUDGMENTS
    rows = sorted(rows, key=lambda r: (r["judge_id"], r["query_id"], r["pass_index"], r["doc_id"]))
    return JUDGMENTS.from_records(rows)
