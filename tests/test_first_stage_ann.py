"""FAISS indexes behind one interface: flat (exact), HNSW and IVF-PQ (approximate)."""
import numpy as np
import pytest

from grouprank.config import RetrievalConfig
from grouprank.first_stage.ann import FaissIndex
from grouprank.first_stage.hybrid import retrieve
from tests.support.hash_encoder import HashEncoder, toy_documents, toy_queries


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 32))
    x = centers[rng.integers(0, 20, 3000)] + 0.3 * rng.normal(size=(3000, 32))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    q = x[rng.choice(3000, 50, replace=False)] + 0.05 * rng.normal(size=(50, 32)).astype(np.float32)
    return x, (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def _recall_in(found, exact, k):
    """share of the exact top-k that the approximate list contains (k@K recall)"""
    return np.mean([len(set(exact[i, :k]) & set(found[i])) / k for i in range(exact.shape[0])])


# the pipeline asks each retriever for `depth` (200) documents and rescores them exactly, so what
# matters is whether the true top 10 are among the approximate top K
@pytest.mark.parametrize("kind,K,min_recall", [("hnsw", 10, 0.9), ("ivfpq", 50, 0.9)])
def test_ann_recall_against_flat(vectors, kind, K, min_recall, tmp_path):
    x, q = vectors
    exact_s, exact = FaissIndex("flat").build(x).search(q, 10)
    assert np.allclose(exact_s[:, 0], (q @ x.T).max(1), atol=1e-5)
    idx = FaissIndex(kind, ivf_nprobe=16, pq_m=8).build(x)   # 8 bytes per vector for d=32 (d/4)
    s, ids = idx.search(q, K)
    assert s.shape == ids.shape == (50, K)
    assert _recall_in(ids, exact, 10) >= min_recall
    idx.save(tmp_path / kind)
    loaded = FaissIndex.load(tmp_path / kind)
    assert loaded.kind == kind and loaded.ntotal == 3000
    assert np.array_equal(loaded.search(q, K)[1], ids)
    if kind == "ivfpq":
        assert idx.build_info["bytes_per_vector"] == 8 and idx.build_info["nlist"] >= 1


def test_k_larger_than_corpus_and_tiny_ivfpq():
    x = np.eye(8, dtype=np.float32)[:5]
    s, ids = FaissIndex("flat").build(x).search(x[:1], 50)
    assert ids.shape == (1, 5) and ids[0, 0] == 0
    s, ids = FaissIndex("ivfpq").build(x).search(x[:2], 3)   # nlist/nbits shrink for 5 vectors
    assert ids.shape == (2, 3)
    with pytest.raises(ValueError):
        FaissIndex("lsh")


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_pipeline_with_ann_index_persists_and_rescoring_is_exact(tmp_path, kind):
    docs = toy_documents(400)
    cfg = RetrievalConfig(index=kind, depth=50)
    r1 = retrieve(docs, toy_queries(), cfg, tmp_path, encoder=HashEncoder())
    assert not r1.reused["faiss"]
    assert len(list((tmp_path / "indexes").glob("faiss-*/index.faiss"))) == 1
    r2 = retrieve(docs, toy_queries(), cfg, tmp_path, encoder=HashEncoder())
    assert r2.reused["faiss"] and r2.reused["embeddings"]
    assert r1.ranking.equals(r2.ranking)
    # dense scores in the ranking are exact cosines, whatever the index
    flat = retrieve(docs, toy_queries(), RetrievalConfig(depth=50), tmp_path, encoder=HashEncoder())
    a = {(q, d): s for q, d, s in zip(*(r1.ranking[c].to_pylist() for c in ("query_id", "doc_id", "dense_score")))}
    b = {(q, d): s for q, d, s in zip(*(flat.ranking[c].to_pylist() for c in ("query_id", "doc_id", "dense_score")))}
    common = set(a) & set(b)
    assert len(common) > 100 and all(abs(a[k] - b[k]) < 1e-5 for k in common)


def test_index_and_bm25_settings_are_one_setting_each_old_keys_refused():
    from pydantic import ValidationError

    from grouprank.first_stage.config import RetrievalConfig
    rc = RetrievalConfig(index="ivfpq", bm25={"k1": 1.2})
    assert (rc.index.kind, rc.index.nprobe, rc.bm25.k1, rc.bm25.b) == ("ivfpq", 32, 1.2, 0.75)
    ann = FaissIndex.from_config(RetrievalConfig(index={"kind": "hnsw", "m": 8, "ef_search": 40}))
    assert (ann.kind, ann.hnsw_m, ann.hnsw_ef_search) == ("hnsw", 8, 40)
    with pytest.raises(ValidationError, match="retrieval.bm25.k1"):
        RetrievalConfig(bm25_k1=1.2)
    with pytest.raises(ValidationError, match="retrieval.index.m"):
        RetrievalConfig(hnsw_m=8)
