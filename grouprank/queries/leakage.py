"""Leakage guard: flag mined or generated queries that copy an evaluation query.

A query leaks when, for some evaluation query,
- ``exact``: the normalised texts are equal (NFKC, casefold, punctuation and whitespace collapsed);
- ``embedding``: the embedding cosine is >= `threshold` (default 0.90);
- ``lexical``: max(normalised edit similarity, token Jaccard) of the normalised texts is >=
  `lexical_threshold` (default 0.85), both texts having >= `min_tokens` tokens. This catches
  lightly edited copies (typos, a word added or dropped, words reordered) even where the
  embeddings drift apart, and one-word edits whose embeddings sit just under the threshold.

Negations count as leakage. "X lacks inductive properties" and "X shows inductive properties" are
a one-word edit of each other: the guard flags them (lexically, or by embedding, which barely
sees a negation). For retrieval data that is the right call: both claims need the same evidence
documents, so training on one teaches the query->document mapping the evaluation tests. On
SciFact, where train and test claims were written from the same cited papers, 128 of the 129
train claims within cosine 0.90 of a test claim share an evidence document with it.

Candidates: the `k` nearest evaluation queries by embedding and the `k` nearest by character
3-gram TF-IDF; exact similarities are computed on those only, so the guard scales with
(mined + eval) * k, not mined * eval.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from grouprank.text import normalize_query

from .textsim import char_ngram_neighbors, dense_neighbors, lexical_similarity


@dataclass(frozen=True)
class EvalQuery:
    query_id: str
    text: str
    eval_set: str  # e.g. "scifact/test" or a file name


@dataclass(frozen=True)
class Leak:
    eval_id: str
    eval_set: str
    via: str            # exact | embedding | lexical
    cosine: float | None
    lexical: float | None
    lexical_kind: str | None

    def detail(self) -> str:
        parts = [f"eval={self.eval_id}", f"set={self.eval_set}", f"via={self.via}"]
        if self.cosine is not None:
            parts.append(f"cos={self.cosine:.3f}")
        if self.lexical is not None:
            parts.append(f"lex={self.lexical:.3f}({self.lexical_kind})")
        return " ".join(parts)


def find_leaks(texts: Sequence[str], evals: Sequence[EvalQuery], embed: Callable[[Sequence[str]], np.ndarray] | None,
               *, threshold: float = 0.90, lexical_threshold: float = 0.85, min_tokens: int = 3,
               k: int = 5) -> list[Leak | None]:
    """For each text, the evaluation query it leaks (or None). `embed` maps texts to normalised
    vectors (None: exact + lexical checks only)."""
    n = len(texts)
    out: list[Leak | None] = [None] * n
    if n == 0 or not evals:
        return out
    norm_t = [normalize_query(t) for t in texts]
    norm_e = [normalize_query(e.text) for e in evals]
    exact: dict[str, int] = {}
    for j, s in enumerate(norm_e):
        exact.setdefault(s, j)
    ci, _ = char_ngram_neighbors(norm_t, norm_e, k=k)
    if embed is not None:
        et = embed(list(texts))
        ee = embed([e.text for e in evals])
        di, _ = dense_neighbors(et, ee, k=k)
    for i in range(n):
        j = exact.get(norm_t[i])
        if j is not None:
            e = evals[j]
            out[i] = Leak(e.query_id, e.eval_set, "exact", 1.0 if embed is not None else None, 1.0, "exact")
            continue
        cands = set(ci[i].tolist())
        if embed is not None:
            cands |= set(di[i].tolist())
        ti = len(norm_t[i].split())
        best: tuple | None = None
        for j in sorted(cands):
            cos = float(et[i] @ ee[j]) if embed is not None else None
            lex = lk = None
            if ti >= min_tokens and len(norm_e[j].split()) >= min_tokens:
                lex, lk = lexical_similarity(norm_t[i], norm_e[j], normalized=True)
            hit_e = cos is not None and cos >= threshold
            hit_l = lex is not None and lex >= lexical_threshold
            if not (hit_e or hit_l):
                continue
            # strongest evidence first: margin over its own threshold
            margin = max((cos - threshold) if hit_e else -1.0, (lex - lexical_threshold) if hit_l else -1.0)
            if best is None or margin > best[0]:
                best = (margin, j, "embedding" if hit_e else "lexical", cos, lex, lk)
        if best is not None:
            _, j, via, cos, lex, lk = best
            e = evals[j]
            out[i] = Leak(e.query_id, e.eval_set, via, cos, lex, lk)
    return out


def leakage_precision(queries, qrels, *, eval_split: str = "test", mined_split: str | None = None,
                      near_identical: float = 0.85, eval_queries=None) -> dict:
    """How many of the queries the guard removed (QUERIES rows with decision "leakage") are real
    leaks by the human labels: they share an evidence document (a qrels doc with grade >= 1) with
    the evaluation query they were matched to, or with any evaluation query, or are a near-identical
    text (lexical similarity >= `near_identical`, the guard's own measure) of the matched one.
    Only removed queries that carry qrels of their own (their `split`, or `mined_split`) can be
    checked by evidence; the others count in `removed_without_qrels`. `eval_queries`: the
    collection's queries (for the evaluation queries' texts; default: `queries`).

    queries / qrels: QUERIES and QRELS as Arrow tables or DataFrames. -> counts and precisions."""
    import re

    import pandas as pd
    qt = queries.to_pandas() if hasattr(queries, "to_pandas") else pd.DataFrame(queries)
    qr = qrels.to_pandas() if hasattr(qrels, "to_pandas") else pd.DataFrame(qrels)
    qr = qr[qr["grade"] >= 1]
    ev = qr[qr["split"] == eval_split] if "split" in qr.columns else qr
    ev_docs: dict[str, set[str]] = {}
    for q, d in zip(ev["query_id"].astype(str), ev["doc_id"].astype(str)):
        ev_docs.setdefault(q, set()).add(d)
    all_ev_docs = set().union(*ev_docs.values()) if ev_docs else set()
    own = qr if mined_split is None or "split" not in qr.columns else qr[qr["split"] == mined_split]
    own_docs: dict[str, set[str]] = {}
    for q, d in zip(own["query_id"].astype(str), own["doc_id"].astype(str)):
        own_docs.setdefault(q, set()).add(d)
    texts = dict(zip(qt["query_id"].astype(str), qt["text"].astype(str)))
    if eval_queries is not None:
        eq = eval_queries.to_pandas() if hasattr(eval_queries, "to_pandas") else pd.DataFrame(eval_queries)
        texts.update({k: v for k, v in zip(eq["query_id"].astype(str), eq["text"].astype(str)) if k not in texts})
    removed = qt[qt["decision"] == "leakage"]
    n = same = anyq = near = real = no_qrels = 0
    by_via: dict[str, dict[str, int]] = {}
    for qid, det in zip(removed["query_id"].astype(str), removed["decision_detail"].fillna("")):
        m = re.search(r"eval=(\S+)", det)
        via = (re.search(r"via=(\S+)", det) or [None, "unknown"])[1]
        e = m.group(1) if m else None
        n += 1
        b = by_via.setdefault(via, {"removed": 0, "real": 0})
        b["removed"] += 1
        docs = own_docs.get(qid)
        s = bool(docs and e is not None and docs & ev_docs.get(e, set()))
        a = bool(docs and docs & all_ev_docs)
        nt = False
        if e is not None and e in texts:
            lex, _ = lexical_similarity(normalize_query(texts[qid]), normalize_query(texts[e]), normalized=True)
            nt = lex is not None and lex >= near_identical
        if not docs:
            no_qrels += 1
        same += s
        anyq += a
        near += nt
        ok = s or a or nt
        real += ok
        b["real"] += ok
    return {"removed": n, "removed_without_qrels": no_qrels,
            "sharing_evidence_with_matched": same, "sharing_evidence_with_any_eval": anyq,
            "near_identical_to_matched": near, "real_leaks": real,
            "precision": (real / n) if n else None, "by_via": by_via}
