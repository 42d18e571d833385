"""How candidates are cut into LLM calls (`grouprank.scoring`), one definition for the judges and
the reranker: near-equal disjoint groups and RankGPT's bottom-up sliding windows."""
import math
import random

import pytest

from grouprank.judges.groupwise import judge_groups
from grouprank.scoring.groups import shuffled_groups, split_groups
from grouprank.scoring.windows import sliding_windows


def test_split_groups_near_equal_and_disjoint():
    for n, c in [(100, 20), (95, 20), (21, 20), (5, 20), (41, 20), (50, 20), (40, 20)]:
        groups = split_groups(list(range(n)), c)
        assert len(groups) == math.ceil(n / c)
        assert [x for g in groups for x in g] == list(range(n))        # order kept, nothing lost
        sizes = [len(g) for g in groups]
        assert max(sizes) - min(sizes) <= 1 and max(sizes) <= c
    assert [len(g) for g in split_groups(list(range(50)), 20)] == [17, 17, 16]   # no group of 10 stragglers
    assert split_groups([], 20) == [] and split_groups(("a", "b"), 0) == [["a"], ["b"]]


def test_shuffled_groups_follow_the_rng():
    ids = [f"d{i}" for i in range(30)]
    g = shuffled_groups(ids, 10, random.Random(1))
    assert sorted(sum(g, [])) == sorted(ids) and [len(x) for x in g] == [10, 10, 10]
    assert g == shuffled_groups(ids, 10, random.Random(1)) != shuffled_groups(ids, 10, random.Random(2))
    assert ids == [f"d{i}" for i in range(30)]                          # input not shuffled in place
    # the judge seeds it per (seed, query, pass): every pass reshuffles, a rerun repeats
    g0 = judge_groups(ids, 10, 13, "q", 0)
    assert g0 == judge_groups(ids, 10, 13, "q", 0) != judge_groups(ids, 10, 13, "q", 1)


def test_sliding_windows_bottom_up():
    assert sliding_windows(8, 4, 2) == [(4, 8), (2, 6), (0, 4)]
    assert sliding_windows(50, 20, 10) == [(30, 50), (20, 40), (10, 30), (0, 20)]
    assert sliding_windows(5, 20, 10) == [(0, 5)]
    assert sliding_windows(25, 20, 10) == [(5, 25), (0, 15)]
    assert sliding_windows(100, 20, 10)[0] == (80, 100) and len(sliding_windows(100, 20, 10)) == 9
    assert len(sliding_windows(30, 10, 5)) == 5
    with pytest.raises(ValueError):
        sliding_windows(30, 10, 0)
