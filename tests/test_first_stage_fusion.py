"""Fusion math on hand-computed examples (grouprank.first_stage.fusion)."""
import math

import numpy as np
import pytest

from grouprank.first_stage import fusion as F


def test_minmax_hand_example():
    # BM25 [10, 5, 0] -> [1, .5, 0]; dense [.9, .7, .8] -> [1, 0, .5]
    fused = F.fuse_minmax(np.array([10.0, 5.0, 0.0]), np.array([0.9, 0.7, 0.8]), 0.5)
    assert fused == pytest.approx([1.0, 0.25, 0.25])
    # weight 0.8 on BM25
    fused = F.fuse_minmax(np.array([10.0, 5.0, 0.0]), np.array([0.9, 0.7, 0.8]), 0.8)
    assert fused == pytest.approx([1.0, 0.4, 0.1])


def test_minmax_missing_and_constant():
    # a NaN (retriever did not score the doc) counts as the minimum (0)
    assert F.minmax(np.array([2.0, np.nan, 4.0])) == pytest.approx([0.0, 0.0, 1.0])
    # a constant list (e.g. no query term indexed) contributes nothing
    assert F.minmax(np.array([3.0, 3.0])) == pytest.approx([0.0, 0.0])
    assert F.minmax(np.array([np.nan, np.nan])) == pytest.approx([0.0, 0.0])


def test_rrf_hand_example():
    # doc A: bm25 rank 1, dense rank 3 -> 1/61 + 1/63; doc B: 2 and 1; doc C: only dense rank 2
    r_b = np.array([1, 2, 0])
    r_d = np.array([3, 1, 2])
    fused = F.fuse_rrf(r_b, r_d, k=60)
    assert fused == pytest.approx([1 / 61 + 1 / 63, 1 / 62 + 1 / 61, 1 / 62])
    assert list(np.argsort(-fused)) == [1, 0, 2]
    # weights: 2w/(k+r1) + 2(1-w)/(k+r2)
    assert F.fuse_rrf(r_b, r_d, k=60, bm25_weight=0.75)[0] == pytest.approx(1.5 / 61 + 0.5 / 63)


def test_ranks_by_score_ties_and_missing():
    s = np.array([0.5, 0.9, 0.5, np.nan, 0.1])
    # ties broken by the tiebreak key (here corpus positions, reversed for docs 0 and 2)
    assert list(F.ranks_by_score(s)) == [2, 1, 3, 0, 4]
    assert list(F.ranks_by_score(s, tiebreak=np.array([9, 1, 3, 4, 5]))) == [3, 1, 2, 0, 4]


def test_fuse_rrf_from_scores_uses_ranks_within_candidates():
    bm = np.array([12.0, 3.0, 7.0])
    de = np.array([0.2, 0.8, 0.5])
    fused = F.fuse("rrf", bm, de, np.array([0, 1, 2]))
    # bm ranks [1, 3, 2], dense ranks [3, 1, 2]
    assert fused == pytest.approx([1 / 61 + 1 / 63, 1 / 63 + 1 / 61, 2 / 62])


def test_order_ties_by_position():
    fused = np.array([0.5, 0.7, 0.5, 0.7])
    pos = np.array([40, 30, 10, 20])
    assert list(F.order(fused, pos)) == [3, 1, 2, 0]


def test_unknown_fusion():
    with pytest.raises(ValueError):
        F.fuse("borda", np.zeros(1), np.zeros(1))
    assert math.isinf(F.fuse("bm25", np.array([np.nan]), np.array([1.0]))[0])
