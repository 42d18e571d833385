"""Agreement between two graded labelings of the same (query, document) pairs, e.g. an LLM
judge against human qrels: linear-weighted Cohen's kappa, Spearman rho, Kendall tau-b and
the confusion matrix."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def weighted_kappa(a: Sequence[int], b: Sequence[int], weights: str = "linear",
                   labels: Sequence[int] | None = None) -> float:
    """Cohen's kappa with linear (|i-j|) or quadratic ((i-j)^2) disagreement weights."""
    a, b = np.asarray(a, dtype=int), np.asarray(b, dtype=int)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("labelings must be non-empty and of equal length")
    labels = np.array(sorted(set(a) | set(b)) if labels is None else list(labels))
    k = len(labels)
    if k == 1:
        return 1.0
    idx = {l: i for i, l in enumerate(labels)}
    obs = np.zeros((k, k))
    for x, y in zip(a, b):
        obs[idx[x], idx[y]] += 1
    obs /= obs.sum()
    exp = np.outer(obs.sum(1), obs.sum(0))
    i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    w = np.abs(i - j) if weights == "linear" else (i - j) ** 2
    w = w / w.max()
    denom = (w * exp).sum()
    return 1.0 if denom == 0 else float(1 - (w * obs).sum() / denom)


def confusion(a: Sequence[int], b: Sequence[int], labels: Sequence[int] | None = None) -> dict:
    labels = sorted(set(a) | set(b)) if labels is None else list(labels)
    m = {x: {y: 0 for y in labels} for x in labels}
    for x, y in zip(a, b):
        m[x][y] += 1
    return {"labels": labels, "matrix": [[m[x][y] for y in labels] for x in labels]}


def agreement(a: Sequence[int], b: Sequence[float], *, a_name: str = "reference", b_name: str = "judge") -> dict:
    """a: reference grades (ints); b: judge grades or scores. Kappa and the confusion matrix need
    integer grades in b; rank correlations work on raw scores too."""
    from scipy.stats import kendalltau, spearmanr
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    out = {"n": int(a_arr.size),
           "spearman": float(spearmanr(a_arr, b_arr).statistic),
           "kendall": float(kendalltau(a_arr, b_arr).statistic)}
    if np.all(np.mod(b_arr, 1) == 0):
        out["kappa_weighted"] = weighted_kappa(a_arr.astype(int), b_arr.astype(int))
        out["confusion"] = confusion(a_arr.astype(int).tolist(), b_arr.astype(int).tolist())
        out["confusion"]["rows"], out["confusion"]["cols"] = a_name, b_name
    return out
