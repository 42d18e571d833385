"""Edit distance, lexical similarity and candidate search used by dedup and the leakage guard
(the query normal form itself is tested in test_text.py)."""
import random

import numpy as np
import pytest

from grouprank.queries.textsim import (char_ngram_neighbors, dense_neighbors, edit_similarity, jaccard,
                                       levenshtein, lexical_similarity)
from grouprank.text import normalize_query


def _dp(a, b):
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def test_levenshtein_matches_dynamic_programming():
    rng = random.Random(7)
    for _ in range(1500):
        alpha = rng.choice(["ab", "abcd", "abcdefghij", "aé∂ 漢"])
        a = "".join(rng.choice(alpha) for _ in range(rng.randint(0, 90)))
        b = "".join(rng.choice(alpha) for _ in range(rng.randint(0, 90)))
        assert levenshtein(a, b) == _dp(a, b), (a, b)
    # longer than a machine word on both sides
    a = "the quick brown fox jumps over the lazy dog " * 5
    b = a.replace("fox", "cat").replace("lazy", "busy")
    assert levenshtein(a, b) == _dp(a, b) == 30


def test_lexical_similarity():
    a = "TNFAIP3 is a glioblastoma tumor suppressor."
    b = "TNFAIP3 is a tumor suppressor in glioblastoma."
    s, kind = lexical_similarity(a, b)
    assert kind == "jaccard" and s == pytest.approx(jaccard(normalize_query(a).split(), normalize_query(b).split()))
    s2, kind2 = lexical_similarity("Headaches are correlated with cognitive impairment.",
                                   "Headaches are corelated with cognitive impairmnet")
    assert kind2 == "edit" and s2 > 0.9
    assert edit_similarity("", "") == 1.0


def test_char_ngram_neighbors_agree_with_brute_force():
    rng = random.Random(3)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda".split()
    pool = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 7))) for _ in range(60)]
    queries = [p.replace("a", "e", 1) for p in pool[:20]] + ["zzz qqq"]
    idx, sc = char_ngram_neighbors(queries, pool, k=3)
    assert idx.shape == (21, 3)
    for i in range(20):  # a one-letter edit of pool[i] has pool[i] (or an identical text) on top
        assert pool[idx[i, 0]] == pool[i] or sc[i, 0] >= sc[i, 1]
        assert pool[i] in [pool[j] for j in idx[i]]
    assert np.all(np.diff(sc, axis=1) <= 1e-6)


def test_dense_neighbors_exclude_self():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx, sc = dense_neighbors(x, x, k=4, chunk=7, exclude_self=True)
    S = x @ x.T
    np.fill_diagonal(S, -np.inf)
    assert np.array_equal(idx[:, 0], S.argmax(1))
    assert not np.any(idx == np.arange(50)[:, None])
