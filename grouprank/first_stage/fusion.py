"""Score fusion for one query's candidates (pure numpy).

Inputs are aligned arrays over the query's candidate set U = union of the BM25 and dense top-depth
lists. `s_bm25` / `s_dense` hold each retriever's score, NaN where that retriever has no score for
the document (only when union rescoring is off: with it, both retrievers score every document of
U exactly, so nothing is missing).

min-max (the paper): fused = w * mm(s_bm25) + (1 - w) * mm(s_dense), mm(x) = (x - min) / (max - min)
  taken over the documents of U that have a score; a missing score counts as 0 (the minimum);
  a retriever whose scores are all equal (e.g. a query with no indexed term) contributes 0.
RRF (Cormack et al. 2009): fused = 2w / (k + r_bm25) + 2(1 - w) / (k + r_dense), k = 60, w = 0.5
  gives the standard unweighted 1/(k+r) sum. Ranks are 1-based in score order within U (ties by
  corpus position); a document absent from a retriever's scores contributes 0 for it.
  With union rescoring, a document outside a retriever's own top-depth gets its rank among U,
  which is > depth and a lower bound of its true global rank.
"""
from __future__ import annotations

import numpy as np


def minmax(s: np.ndarray) -> np.ndarray:
    """Min-max normalise the finite entries to [0, 1]; NaN -> 0; constant -> 0."""
    s = np.asarray(s, dtype=np.float64)
    out = np.zeros_like(s)
    ok = np.isfinite(s)
    if not ok.any():
        return out
    lo, hi = s[ok].min(), s[ok].max()
    if hi > lo:
        out[ok] = (s[ok] - lo) / (hi - lo)
    return out


def ranks_by_score(s: np.ndarray, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of each entry by descending score (ties by ascending `tiebreak`, default
    array order); NaN entries get rank 0 (= absent)."""
    s = np.asarray(s, dtype=np.float64)
    n = s.shape[0]
    tb = np.arange(n) if tiebreak is None else np.asarray(tiebreak)
    ok = np.isfinite(s)
    ranks = np.zeros(n, dtype=np.int64)
    idx = np.flatnonzero(ok)
    order = idx[np.lexsort((tb[idx], -s[idx]))]
    ranks[order] = np.arange(1, order.shape[0] + 1)
    return ranks


def fuse_minmax(s_bm25: np.ndarray, s_dense: np.ndarray, bm25_weight: float = 0.5) -> np.ndarray:
    return bm25_weight * minmax(s_bm25) + (1.0 - bm25_weight) * minmax(s_dense)


def fuse_rrf(r_bm25: np.ndarray, r_dense: np.ndarray, k: int = 60, bm25_weight: float = 0.5) -> np.ndarray:
    """Ranks 1-based; 0 = absent (contributes nothing)."""
    r1 = np.asarray(r_bm25, dtype=np.float64)
    r2 = np.asarray(r_dense, dtype=np.float64)
    c1 = np.where(r1 > 0, 1.0 / (k + np.where(r1 > 0, r1, 1.0)), 0.0)
    c2 = np.where(r2 > 0, 1.0 / (k + np.where(r2 > 0, r2, 1.0)), 0.0)
    return 2.0 * bm25_weight * c1 + 2.0 * (1.0 - bm25_weight) * c2


def fuse(method: str, s_bm25: np.ndarray, s_dense: np.ndarray, positions: np.ndarray | None = None, *,
         bm25_weight: float = 0.5, rrf_k: int = 60) -> np.ndarray:
    """Fused score per candidate. `positions` (corpus positions) break rank ties in RRF."""
    if method == "minmax":
        return fuse_minmax(s_bm25, s_dense, bm25_weight)
    if method == "rrf":
        return fuse_rrf(ranks_by_score(s_bm25, positions), ranks_by_score(s_dense, positions), rrf_k, bm25_weight)
    if method == "bm25":
        return np.nan_to_num(np.asarray(s_bm25, dtype=np.float64), nan=-np.inf)
    if method == "dense":
        return np.nan_to_num(np.asarray(s_dense, dtype=np.float64), nan=-np.inf)
    raise ValueError(f"unknown fusion {method!r} (minmax, rrf, bm25, dense)")


def order(fused: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Indices sorting candidates by fused score desc, ties by corpus position asc."""
    return np.lexsort((positions, -np.asarray(fused, dtype=np.float64)))
