"""BM25Retriever: stemming/stopwords, exact score_docs, deterministic ties, save/load."""
import numpy as np
import pytest

from grouprank.first_stage.bm25 import BM25Retriever

DOCS = {
    "d1": "Cats purr when they are happy",
    "d2": "Dogs bark loudly at night",
    "d3": "The barking of the dog woke the cat",
    "d4": "Proteins fold into three-dimensional structures",
    "d5": "Protein folding is assisted by chaperones",
}


@pytest.fixture(scope="module")
def bm():
    return BM25Retriever().index(list(DOCS), list(DOCS.values()))


def test_stemming_and_ranking(bm):
    hits = bm.search(["barking dogs", "protein folded"], k=3)
    assert {d for d, _ in hits[0][:2]} == {"d2", "d3"}          # bark/barking, dog/dogs share stems
    assert {d for d, _ in hits[1][:2]} == {"d4", "d5"}
    assert all(s > 0 for q in hits for _, s in q)
    assert [s for _, s in hits[0]] == sorted([s for _, s in hits[0]], reverse=True)


def test_stopword_only_query_returns_nothing(bm):
    assert bm.search(["the of and"], k=5) == [[]]
    assert not bm.score_docs("the", ["d1", "d3"]).any()


def test_score_docs_matches_search(bm):
    hits = bm.search(["dog barking at the cat"], k=5)[0]
    ids = [d for d, _ in hits] + ["nope"]
    s = bm.score_docs("dog barking at the cat", ids)
    assert s[:-1] == pytest.approx([v for _, v in hits], rel=1e-6)
    assert s[-1] == 0.0 and s.dtype == np.float32


def test_parameters_change_scores():
    a = BM25Retriever(k1=1.5, b=0.75).index(list(DOCS), list(DOCS.values())).scores("dog")
    b = BM25Retriever(k1=0.9, b=0.4).index(list(DOCS), list(DOCS.values())).scores("dog")
    assert not np.allclose(a, b)
    nostem = BM25Retriever(stemmer=None).index(list(DOCS), list(DOCS.values()))
    assert nostem.search(["barking"], k=5)[0][0][0] == "d3" and len(nostem.search(["barking"], k=5)[0]) == 1


def test_equal_scores_keep_corpus_order():
    # identical documents score the same: the top k are the first k in corpus order, not any k
    ids = ["z9", "a1", "m5", "b2", "y8", "c3", "x7"]
    r = BM25Retriever().index(ids, ["cats purr softly"] * 6 + ["dogs bark"])
    assert [d for d, _ in r.search(["cats"], k=3)[0]] == ["z9", "a1", "m5"]
    assert [d for d, _ in r.search(["cats"], k=10)[0]] == ids[:6]


def test_save_load_roundtrip(bm, tmp_path):
    bm.save(tmp_path / "idx")
    r = BM25Retriever.load(tmp_path / "idx")
    assert r.doc_ids == bm.doc_ids and r.k1 == bm.k1 and r.stemmer_name == "english"
    assert r.search(["chaperone proteins"], k=2) == bm.search(["chaperone proteins"], k=2)


def test_errors():
    with pytest.raises(RuntimeError):
        BM25Retriever().search(["x"], 1)
    with pytest.raises(ValueError):
        BM25Retriever().index(["a"], ["x", "y"])
