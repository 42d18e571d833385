"""The paper's candidate pool: per query the top `top` documents of the fused ranking plus `sampled`
documents drawn uniformly without replacement from ranks [lo, hi] (defaults 10 + 40 from 11-200).

Determinism: the draw for a query comes from `seeded_generator(seed, "pool", query_id)`
(`grouprank.scoring.rng`), so a query's pool depends only on the seed, its id and its ranking, not
on which other queries are in the run or their order. Ranks overlapping the top block are never
sampled (the sampling range starts after the top block when they overlap). A query with fewer
candidates than asked gets all it has.
"""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

from data_schemas import CANDIDATES
from grouprank.collections.trec import write_trec_run
from grouprank.scoring.rng import seeded_generator


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
        pick = np.sort(seeded_generator(seed, "pool", query_id).choice(window.shape[0], size=n, replace=False))
        samp = window[pick]
    else:
        samp = np.empty(0, dtype=np.int64)
    chosen = np.concatenate([top_ranks, samp])
    flags = np.concatenate([np.zeros(top_ranks.shape[0], bool), np.ones(samp.shape[0], bool)])
    o = np.argsort(chosen, kind="stable")
    return chosen[o], flags[o]


def pool(result, cfg=None, *, top: int | None = None, sampled: int | None = None,
         sample_from: tuple[int, int] | None = None, seed: int | None = None,
         run_path: str | os.PathLike | None = None, run_name: str = "grouprank-pool") -> pa.Table:
    """The CANDIDATES table: per query the top `top` of the fused ranking (pool='top') plus
    `sampled` drawn from ranks `sample_from` (pool='sampled'); sizes default to the config
    (10 + 40 from 11-200). To keep the whole ranking use `top=depth, sampled=0` (pool='all').
    `cfg`: RunConfig, RetrievalConfig or None (defaults). Optionally writes the pool as a TREC run
    (fused rank and score) to `run_path`."""
    if cfg is None:
        from .config import RetrievalConfig
        cfg = RetrievalConfig()
    rcfg = cfg.retrieval if hasattr(cfg, "retrieval") else cfg
    top = rcfg.pool_top if top is None else top
    sampled = rcfg.pool_sampled if sampled is None else sampled
    sample_from = tuple(rcfg.pool_sample_from) if sample_from is None else tuple(sample_from)
    seed = getattr(cfg, "seed", 13) if seed is None else seed  # the run's seed (RunConfig)
    ranking = getattr(result, "ranking", result)  # a RetrievalResult or a RANKING table
    keep_all = sampled == 0 and top >= (max(ranking["rank"].to_pylist()) if ranking.num_rows else 0)
    qcol = np.asarray(ranking["query_id"].to_pylist(), dtype=object)
    ranks = ranking["rank"].to_numpy()
    take, label = [], []
    if ranking.num_rows:
        # rows grouped by query (ranking_table emits them grouped, but don't rely on it)
        order = np.lexsort((ranks, qcol.astype(str)))
        qs = qcol[order]
        bounds = np.flatnonzero(np.r_[True, qs[1:] != qs[:-1], True])
        for a, b in zip(bounds[:-1], bounds[1:]):
            rows = order[a:b]
            chosen, is_s = select_pool(ranks[rows], str(qs[a]), top=top, sampled=sampled,
                                       sample_from=sample_from, seed=seed)
            pos = {int(r): int(i) for r, i in zip(ranks[rows], rows)}
            for r, s in zip(chosen, is_s):
                take.append(pos[int(r)])
                label.append("all" if keep_all else ("sampled" if s else "top"))
    t = ranking.take(pa.array(take, pa.int64())).drop_columns([c for c in ranking.column_names
                                                                 if c not in CANDIDATES.columns])
    t = t.append_column("pool", pa.array(label, pa.string()))
    t = t.select(CANDIDATES.columns).cast(CANDIDATES.arrow_schema())
    CANDIDATES.validate_table(t, where="pool()")
    if run_path is not None:
        write_trec_run(t, run_path, run_name)
    return t
