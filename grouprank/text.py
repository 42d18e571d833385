"""Primitives every stage shares, written once: a document's text, a query's normal form, exact top-k.

The judge, the candidate retrievers, the reranker and the exports all call `document_text`, so
they see the same string for the same document (tests/test_text.py checks it through each of them).
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Iterable

import numpy as np

_WS = re.compile(r"\s+")


def document_text(title: str | None, text: str | None, include_title: bool = True) -> str:
    """`title + " " + text` (BEIR's convention for BM25 and dense models), or the text alone when
    there is no title, when `include_title` is false, or when the text already starts with its
    title (Cranfield repeats it), so a title is never counted twice."""
    text = text or ""
    t = (title or "").strip()
    if include_title and t and not text.lstrip().lower().startswith(t.lower()):
        return f"{t} {text}"
    return text


def document_texts(documents, include_title: bool = True) -> tuple[list[str], list[str]]:
    """(doc_ids, texts) in table order from a DOCUMENTS-like Arrow table (doc_id, text, optional title)."""
    ids = [str(x) for x in documents.column("doc_id").to_pylist()]
    texts = documents.column("text").to_pylist()
    titles = (documents.column("title").to_pylist() if "title" in documents.column_names
              else [None] * len(ids))
    return ids, [document_text(ti, x, include_title) for ti, x in zip(titles, texts)]


def document_text_map(documents, needed: Iterable[str] | None = None,
                      include_title: bool = True) -> dict[str, str]:
    """{doc_id: document_text} for the documents of a table (only `needed` ids when given)."""
    keep = set(map(str, needed)) if needed is not None else None
    ids, texts = document_texts(documents, include_title)
    return {d: t for d, t in zip(ids, texts) if keep is None or d in keep}


@lru_cache(maxsize=1 << 16)
def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


def normalize_query(text: str | None) -> str:
    """NFKC, casefold, punctuation -> space, whitespace collapsed and stripped: the form in which
    two queries count as the same query (leakage guard, evaluation-overlap checks, dedup)."""
    t = unicodedata.normalize("NFKC", text or "").casefold()
    t = "".join(" " if _is_punct(c) else c for c in t)
    return _WS.sub(" ", t).strip()


def training_queries(texts: dict[str, str], train_ids: Iterable[str], train_texts: Iterable[str]) -> set[str]:
    """The ids of `texts` ({query id: text}) that are training queries: the same id, or the same
    text after `normalize_query`. The evaluate stage and the retriever's evaluation leave them out."""
    ids = {str(i) for i in train_ids}
    norm = {normalize_query(t) for t in train_texts}
    return {i for i, t in texts.items() if i in ids or normalize_query(t) in norm}


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest of a 1-D score vector, descending, ties by ascending index."""
    n = scores.shape[0]
    k = min(k, n)
    if k <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=scores.dtype)
    if k < n:
        # argpartition picks an arbitrary subset among ties at the boundary: take everything
        # >= the k-th value, then order by (-score, index) and cut.
        kth = np.partition(scores, n - k)[n - k]
        cand = np.flatnonzero(scores >= kth)
    else:
        cand = np.arange(n)
    order = np.lexsort((cand, -scores[cand]))[:k]
    idx = cand[order]
    return idx.astype(np.int64), scores[idx]


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k of a 2-D score matrix: (indices [n, k], values [n, k]), best first, ties by
    ascending index (exact, also for a tie at the cut: the lowest indices are kept, as in `top_k`)."""
    n, m = scores.shape
    k = int(min(k, m))
    if k <= 0:
        return (np.zeros((n, 0), np.int64), np.zeros((n, 0), scores.dtype))
    if k < m:
        idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(scores, idx, axis=1).min(axis=1, keepdims=True)
        amb = np.flatnonzero((scores >= kth).sum(axis=1) > k)  # rows with a tie at the cut
        if amb.size:  # keep the lowest indices among the tied, as top_k does
            s, t = scores[amb], kth[amb]
            tied = s == t
            keep = (s > t) | (tied & (np.cumsum(tied, axis=1) <= k - (s > t).sum(axis=1, keepdims=True)))
            idx[amb] = np.nonzero(keep)[1].reshape(amb.size, k)
    else:
        idx = np.tile(np.arange(m), (n, 1))
    part = np.take_along_axis(scores, idx, axis=1)
    order = np.lexsort((idx, -part), axis=1)
    return np.take_along_axis(idx, order, axis=1).astype(np.int64), np.take_along_axis(part, order, axis=1)


def inner_product_top_k(q: np.ndarray, p: np.ndarray, k: int, chunk: int = 1024,
                        exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner products of the rows of `q` against the rows of `p` (normalised vectors:
    cosine), in chunks of `chunk` query rows: (indices [nq, k], scores [nq, k]), best first, ties by
    ascending index. With `exclude_self` (q is p) the diagonal is ignored."""
    kk = min(int(k), p.shape[0] - (1 if exclude_self else 0))
    if kk <= 0 or q.shape[0] == 0:
        return np.zeros((q.shape[0], 0), dtype=np.int64), np.zeros((q.shape[0], 0), dtype=np.float32)
    out_i = np.zeros((q.shape[0], kk), dtype=np.int64)
    out_s = np.zeros((q.shape[0], kk), dtype=np.float32)
    for s in range(0, q.shape[0], chunk):
        S = q[s:s + chunk] @ p.T
        if exclude_self:
            r = np.arange(S.shape[0])
            S[r, r + s] = -np.inf
        out_i[s:s + chunk], out_s[s:s + chunk] = top_k_rows(S, kk)
    return out_i, out_s


def strip_sentence(text: str, sentence: str) -> str:
    """`text` without `sentence` (whitespace-insensitive; whitespace collapsed), or `text` unchanged
    when the sentence is not in it: an extractive query's source document as a training positive."""
    flat = " ".join(str(text).split())
    s = " ".join(str(sentence).split())
    if not s or s not in flat:
        return text
    return " ".join(flat.replace(s, " ").split())
