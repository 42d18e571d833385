"""The teacher: BM25, all-mpnet-base-v2 and the MiniLM student, combined per collection.

A query's candidate pool is the union of each signal's top `depth` documents over the whole corpus;
in it every signal becomes a standard score (`grouprank.judges.local_scorer.pool_relative`, the local
judge's pool-relative features), and a teacher is a weighted sum of those (divided by the weights'
sum, so margins have one scale whatever the combination). Which combination teaches is chosen per
collection on held-out synthetic queries (`source_metrics`): no fixed one wins everywhere (BM25 is
weak on some corpora, strong on others).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from grouprank.judges.local_scorer import pool_relative

from .choices import TEACHERS  # noqa: F401  (re-exported: the candidates)


def bm25_matrix(bm25, queries: Sequence[str]) -> np.ndarray:
    """[n_queries, n_docs] BM25 scores (corpus order of the index)."""
    return np.stack([np.asarray(s, dtype=np.float32) for s in bm25.iter_scores(list(queries))]) \
        if len(queries) else np.zeros((0, bm25.n_docs), dtype=np.float32)


class Pools:
    """Per query: the candidate pool (corpus positions) and each signal's standard score in it."""

    def __init__(self, scores: Mapping[str, np.ndarray], depth: int = 100):
        n = next(iter(scores.values())).shape[0]
        self.idx: list[np.ndarray] = []
        self.z: list[dict[str, np.ndarray]] = []
        for i in range(n):
            cand = [np.argpartition(-s[i], min(depth, s.shape[1] - 1))[:depth] for s in scores.values()]
            u = np.unique(np.concatenate(cand))
            self.idx.append(u)
            self.z.append({k: pool_relative(s[i, u]) for k, s in scores.items()})

    def __len__(self) -> int:
        return len(self.idx)

    def combined(self, i: int, weights: Mapping[str, float]) -> np.ndarray:
        tot = sum(weights.values())
        return sum(w * self.z[i][k] for k, w in weights.items()) / tot

    def ranking(self, i: int, weights: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """(corpus positions, combined scores) of query i's pool, best first."""
        c = self.combined(i, weights)
        o = np.argsort(-c, kind="stable")
        return self.idx[i][o], c[o]


def rank_of(order: np.ndarray, target: int) -> int | None:
    """1-based rank of `target` in `order`, None when absent."""
    hit = np.flatnonzero(order == target)
    return int(hit[0]) + 1 if hit.size else None


def source_metrics(ranks: Sequence[int | None], k: int = 10) -> dict[str, float]:
    """One relevant document per query (its source): nDCG@k, MRR@k, Recall@k and Recall@100."""
    r = [x if x is not None else 10 ** 9 for x in ranks]
    n = max(1, len(r))
    return {f"nDCG@{k}": round(float(sum(1 / np.log2(x + 1) for x in r if x <= k)) / n, 4),
            f"MRR@{k}": round(sum(1 / x for x in r if x <= k) / n, 4),
            f"R@{k}": round(sum(x <= k for x in r) / n, 4),
            "R@100": round(sum(x <= 100 for x in r) / n, 4)}


def dense_ranks(Q: np.ndarray, D: np.ndarray, targets: Sequence[int]) -> list[int]:
    """1-based rank of each query's target under cosine (rows L2-normalised); ties count against it."""
    S = Q @ D.T
    t = np.asarray(targets)
    own = S[np.arange(len(t)), t]
    return [int(x) for x in (S >= own[:, None]).sum(1)]


def teacher_ranks(pools: Pools, weights: Mapping[str, float], targets: Sequence[int]) -> list[int | None]:
    return [rank_of(pools.ranking(i, weights)[0], int(t)) for i, t in enumerate(targets)]
