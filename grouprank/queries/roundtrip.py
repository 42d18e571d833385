"""Round-trip filter (Promptagator / InPars consistency filtering): a generated query is kept only
if its source document ranks within the top `k` of the hybrid retriever for it.

The rank is recorded for every generated query (down to `depth`; null beyond it or when the
source document is not in the corpus), so users can pick their own threshold afterwards:
``mined.filter(roundtrip_rank <= 5)``.
"""
from __future__ import annotations

from typing import Callable, Sequence

RankFn = Callable[[Sequence[str], Sequence[str], int], list]


def source_ranks(texts: Sequence[str], source_doc_ids: Sequence[str], rank_fn: RankFn, depth: int,
                 batch: int = 512) -> list[int | None]:
    """1-based rank of source_doc_ids[i] for texts[i] in the top `depth` (None if absent).
    `rank_fn(texts, doc_ids, k)` is e.g. `HybridRetriever.rank_of`."""
    out: list[int | None] = []
    for s in range(0, len(texts), batch):
        out.extend(rank_fn(list(texts[s:s + batch]), list(source_doc_ids[s:s + batch]), depth))
    return [int(r) if r is not None else None for r in out]


def keep_rate(ranks: Sequence[int | None], k: int) -> float | None:
    n = len(ranks)
    return None if n == 0 else sum(1 for r in ranks if r is not None and r <= k) / n


def rank_summary(ranks: Sequence[int | None], k: int, depth: int) -> dict:
    n = len(ranks)
    if n == 0:
        return {"n": 0}
    def frac(c):
        return round(sum(1 for r in ranks if r is not None and r <= c) / n, 4)
    found = sorted(r for r in ranks if r is not None)
    return {"n": n, "keep_rate": frac(k), "at_1": frac(1), "at_5": frac(5), "at_10": frac(10),
            f"at_{depth}": frac(depth), "not_found": n - len(found), "k": k, "depth": depth,
            "median_rank_found": found[len(found) // 2] if found else None}
