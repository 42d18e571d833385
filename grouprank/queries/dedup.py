"""Deduplication: exact (normalised text) and near-duplicate (embedding cosine >= threshold).

Queries are taken in priority order (the caller's order: existing queries first, then generated
ones in sampling order); the first of a group is its representative and stays "kept"; the others
get decision "duplicate" (detail ``of=<representative id>``) or "near_duplicate" (detail
``of=<representative id> cos=<cosine>``). Near-duplicate grouping is a star around
representatives: a query merges into the most similar earlier *representative* above the
threshold, never into a query that was itself merged (no chaining a~b~c with a and c far apart).

`eligible(i, j)` can exclude pairs from near-dedup: the mining stage uses it to leave existing
(human) queries alone among themselves by default (SciFact's train set holds deliberate minimal
pairs, "X increases Y" / "X decreases Y", at cosine > 0.95: distinct claims, not duplicates).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from grouprank.text import normalize_query


def exact_groups(texts: Sequence[str]) -> list[int | None]:
    """For each text the index of the first text with the same normalised form (None for firsts)."""
    first: dict[str, int] = {}
    out: list[int | None] = []
    for i, t in enumerate(texts):
        k = normalize_query(t)
        j = first.setdefault(k, i)
        out.append(None if j == i else j)
    return out


def near_groups(emb: np.ndarray, threshold: float, eligible: Callable[[int, int], bool] | None = None,
                chunk: int = 512) -> list[tuple[int, float] | None]:
    """For each row i (priority order) None if it is a representative, else (representative j < i,
    cosine). Exact: every pair above the threshold is considered (chunked matrix products)."""
    n = emb.shape[0]
    out: list[tuple[int, float] | None] = [None] * n
    if n < 2:
        return out
    earlier: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for s in range(0, n, chunk):
        S = emb[s:s + chunk] @ emb.T
        rows, cols = np.nonzero(S >= threshold)
        for r, c in zip(rows.tolist(), cols.tolist()):
            i = s + r
            if c < i:
                earlier[i].append((c, float(S[r, c])))
    is_rep = [False] * n
    for i in range(n):
        best = None
        for j, c in earlier[i]:
            if is_rep[j] and (eligible is None or eligible(i, j)) and (best is None or c > best[1]):
                best = (j, c)
        if best is None:
            is_rep[i] = True
        else:
            out[i] = best
    return out
