"""Evaluation plumbing and data handling of grouprank.retriever_training (no training here)."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from grouprank.retriever_training.data import (holdout_split, normalise_examples, qrels_from_examples, select_examples,
                                      to_training_frame)
from grouprank.retriever_training.evaluate import DenseEvaluator, exact_search


def test_exact_search_matches_bruteforce():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(7, 16)).astype(np.float32)
    d = rng.normal(size=(50, 16)).astype(np.float32)
    for k in (1, 10, 50, 80):
        S, I = exact_search(q, d, k, chunk=3)
        full = q @ d.T
        kk = min(k, 50)
        assert S.shape == I.shape == (7, kk)
        for i in range(7):
            ref = np.argsort(-full[i], kind="stable")[:kk]
            assert list(I[i]) == list(ref)
            assert np.allclose(S[i], full[i][ref], atol=1e-5)


def _examples():
    rows = []
    for q in range(10):
        for p in range(2):
            rows.append({"query_id": f"q{q}", "anchor": f"query {q}", "positive_doc_id": f"d{q}_{p}",
                         "positive": f"doc {q} {p}", "positive_grade": 3 - p,
                         "negative_doc_ids": [f"n{q}_{i}" for i in range(q % 4)],
                         "negatives": [f"neg {q} {i}" for i in range(q % 4)],
                         "negative_grades": [0] * (q % 4)})
    return normalise_examples(pd.DataFrame(rows))


def test_holdout_split_by_query_and_qrels():
    df = _examples()
    tr, held = holdout_split(df, 0.3, seed=1)
    assert set(tr["query_id"]).isdisjoint(held["query_id"])
    assert held["query_id"].nunique() == 3 and len(tr) + len(held) == len(df)
    qr = qrels_from_examples(held)
    assert len(qr) == 6 and set(qr["grade"]) == {2, 3}
    assert holdout_split(df, 0.3, seed=1)[1].equals(held)  # seeded


def test_select_and_training_frame_drop_or_top_up():
    df = _examples()
    one = select_examples(df, 1)
    assert len(one) == 10 and set(one["positive_grade"]) == {3}
    frame, st = to_training_frame(df, 2, drop_short=True)
    # rows of queries with q % 4 in {0, 1} (q = 0, 1, 4, 5, 8, 9) have < 2 negatives
    assert st["rows_dropped_short"] == 12 and len(frame) == 8
    assert list(frame.columns) == ["anchor", "positive", "negative_1", "negative_2"]
    frame, st = to_training_frame(df, 3, drop_short=False, seed=2)
    assert len(frame) == 20 and st["rows_topped_up"] > 0
    pos_of = {}
    for r in df.itertuples():
        pos_of.setdefault(r.anchor, set()).add(r.positive)
    for r in frame.itertuples():
        negs = [r.negative_1, r.negative_2, r.negative_3]
        assert not (set(negs) & pos_of[r.anchor]) and len(set(negs)) == 3
    # None: the smallest negative count of any row (0 here): pairs only
    frame, st = to_training_frame(df, None)
    assert st["n_negatives"] == 0 and list(frame.columns) == ["anchor", "positive"]


def test_exported_view_normalises():
    raw = pd.DataFrame({"anchor": ["a", "b"], "positive": ["p", "q"], "negative_1": ["x", "y"],
                        "negative_2": ["z", "w"]})
    df = normalise_examples(raw)
    assert list(df["negatives"]) == [["x", "z"], ["y", "w"]]
    assert df["query_id"].nunique() == 2 and all(len(x) == 2 for x in df["negative_doc_ids"])


def test_drop_eval_overlap():
    from grouprank.retriever_training.stage import drop_eval_overlap
    df = _examples()
    out, n = drop_eval_overlap(df, {"q1": "something", "zz": "  QUERY 2 "})
    assert n == 4 and not ({"q1", "q2"} & set(out["query_id"]))


@pytest.fixture(scope="module")
def small(load):
    c = load("scifact")
    te = c.qrels_for("test").to_pylist()[:5]
    keep = {r["doc_id"] for r in te}
    ids = c.documents.column("doc_id").to_pylist()
    keep |= set(ids[:25])
    docs = c.documents.filter(pa.array([d in keep for d in ids]))
    qt = {r["query_id"]: r["text"] for r in c.queries_for("test").to_pylist()}
    qrels = pd.DataFrame(te)[["query_id", "doc_id", "grade"]]
    return docs, {q: qt[q] for q in qrels["query_id"]}, qrels


def test_evaluator_reuses_retrieval_stage_embeddings(small, tmp_path):
    """The retrieval stage's persisted corpus embeddings are found (same key) and used as they
    are; the metrics equal a second, independent evaluation without persistence."""
    from grouprank.config import RetrievalConfig
    from grouprank.first_stage.hybrid import HybridRetriever
    docs, queries, qrels = small
    rc = RetrievalConfig(max_seq_length=64, dense_backend="torch")  # the evaluator's default backend
    hr = HybridRetriever(docs, rc, tmp_path)
    assert hr.reused["embeddings"] is False
    ev = DenseEvaluator(docs, queries, qrels, max_seq_length=64, store_root=tmp_path / "indexes")
    m1 = ev.evaluate("all-MiniLM-L6-v2")
    assert ev.last["corpus_reused"] is True
    m2 = DenseEvaluator(docs, queries, qrels, max_seq_length=64).evaluate("all-MiniLM-L6-v2")
    assert m1 == pytest.approx(m2, abs=1e-6)
    assert 0 < m1["nDCG@10"] <= 1
    # a different sequence length is a different encoder: new embeddings, not the stored ones
    ev3 = DenseEvaluator(docs, queries, qrels, max_seq_length=32, store_root=tmp_path / "indexes")
    ev3.evaluate("all-MiniLM-L6-v2")
    assert ev3.last["corpus_reused"] is False
