"""The paper's candidate pool: per query the top `top` documents of the fused ranking plus `sampled`
documents drawn uniformly without replacement from ranks [lo, hi] (defaults 10 + 40 from 11-200).

Determinism: the generator for a query is seeded from sha256(f"{seed}:{query_id}"), so a query's
pool depends only on the seed, its id and its ranking, not on which other queries are in the run
or their order. Ranks overlapping the top block are never sampled (the sampling range starts after
the top block when they overlap). A query with fewer candidates than asked gets all it has.
"""
from __future__ import annotations

import hashlib

import numpy as np


def query_rng(seed: int, query_id: str) -> np.random.Generator:
    h = hashlib.sha256(f"{int(seed)}:{query_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def select_pool(ranks: np.ndarray, query_id: str, *, top: int = 10, sampled: int = 40,
                sample_from: tuple[int, int] = (11, 200), seed: int = 13) -> tuple[np.ndarray, np.ndarray]:
    """Choose a pool from one query's ranking.

    ranks: the 1-based fused ranks available for the query (any order).
    Returns (chosen ranks ascending, is_sampled flags aligned with them)."""
    ranks = np.sort(np.asarray(ranks, dtype=np.int64))
    if top < 0 or sampled < 0:
        raise ValueError("pool sizes must be >= 0")
    lo, hi = int(sample_from[0]), int(sample_from[1])
    if lo < 1 or hi < lo:
        raise ValueError(f"bad sampling range {sample_from}: need 1 <= lo <= hi")
    top_ranks = ranks[ranks <= top]
    lo = max(lo, top + 1)
    window = ranks[(ranks >= lo) & (ranks <= hi)]
    n = min(sampled, window.shape[0])
    if n:
        pick = np.sort(query_rng(seed, query_id).choice(window.shape[0], size=n, replace=False))
        samp = window[pick]
    else:
        samp = np.empty(0, dtype=np.int64)
    chosen = np.concatenate([top_ranks, samp])
    flags = np.concatenate([np.zeros(top_ranks.shape[0], bool), np.ones(samp.shape[0], bool)])
    o = np.argsort(chosen, kind="stable")
    return chosen[o], flags[o]
