"""retrieve / pool / HybridRetriever.search on a toy corpus with the hashing encoder (no model)."""
import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401
import pytest

from data_schemas import CANDIDATES
from grouprank.config import RetrievalConfig
from grouprank.first_stage import fusion as F
from grouprank.collections.trec import write_trec_run
from grouprank.first_stage.hybrid import HybridRetriever, retrieve
from grouprank.first_stage.pooling import pool
from tests.support.hash_encoder import HashEncoder, toy_documents, toy_queries


@pytest.fixture(scope="module")
def docs():
    return toy_documents(300)


@pytest.fixture(scope="module")
def result(docs, tmp_path_factory):
    return retrieve(docs, toy_queries(), RetrievalConfig(), tmp_path_factory.mktemp("wd"), encoder=HashEncoder())


def test_ranking_shape_and_topic(result):
    df = result.ranking.to_pandas()
    assert set(df["query_id"]) == {"q-protein", "q-vitamin", "q-virus", "q-heart"}
    assert (df.groupby("query_id").size() == 200).all()
    for q, g in df.groupby("query_id"):
        assert list(g["rank"]) == list(range(1, 201))
        assert list(g["fused_score"]) == sorted(g["fused_score"], reverse=True)
        top = g.nsmallest(10, "rank")
        topic = q.split("-")[1]
        docs_topic = {f"d{i:04d}" for i in range(300) if ["protein", "vitamin", "virus", "heart", "brain",
                                                           "cancer"][i % 6] == topic}
        assert set(top["doc_id"]) <= docs_topic


def test_union_rescoring_gives_every_candidate_both_scores(result):
    t = result.ranking
    assert t["bm25_score"].null_count == 0 and t["dense_score"].null_count == 0
    df = t.to_pandas()
    # ranks are those of each retriever's own list: present for some docs only, 1..depth
    assert df["bm25_rank"].notna().any() and df["bm25_rank"].dropna().between(1, 200).all()
    # the fused score is the min-max fusion of the stored scores, normalised over each query's candidates
    for qid, c in zip(result.query_ids, result.candidates):
        g = df[df["query_id"] == qid]
        fused = F.fuse_minmax(c.bm25, c.dense, 0.5)
        top = np.sort(fused)[::-1][:200]
        assert g["fused_score"].to_numpy() == pytest.approx(top)


def test_without_union_rescoring_missing_scores_are_null(docs, tmp_path):
    r = retrieve(docs, toy_queries(), RetrievalConfig(union_rescore=False, depth=20), tmp_path, encoder=HashEncoder())
    df = r.ranking.to_pandas()
    assert (df["bm25_score"].isna() == df["bm25_rank"].isna()).all()
    assert (df["dense_score"].isna() == df["dense_rank"].isna()).all()
    assert not (df["bm25_score"].isna() & df["dense_score"].isna()).any()


def test_refuse_and_single_systems(result):
    rrf = result.with_fusion("rrf")
    assert rrf.fusion == "rrf" and set(rrf.ranking["fusion"].to_pylist()) == {"rrf"}
    assert rrf.ranking.num_rows == result.ranking.num_rows
    assert result.ranking["fusion"].to_pylist()[0] == "minmax"  # the original is unchanged
    bm = result.run("bm25")
    de = result.run("dense")
    assert set(bm.columns) == {"query_id", "doc_id", "score"}
    assert (de.groupby("query_id").size() == 200).all()
    for q, g in bm.groupby("query_id"):
        assert list(g["score"]) == sorted(g["score"], reverse=True)
    w = result.with_fusion("minmax", bm25_weight=1.0).ranking.to_pandas()
    assert list(w[w["query_id"] == "q-heart"]["doc_id"][:20]) == list(bm[bm["query_id"] == "q-heart"]["doc_id"][:20])


def test_pool_from_result(result, tmp_path):
    cands = pool(result, RetrievalConfig(), run_path=tmp_path / "c.trec")
    CANDIDATES.validate_table(cands)
    assert cands.num_rows == 4 * 50
    assert set(cands["fusion"].to_pylist()) == {"minmax"}
    again = pool(result, RetrievalConfig())
    assert again.equals(cands)
    other_seed = pool(result, RetrievalConfig(), seed=99)
    assert not other_seed.equals(cands)
    write_trec_run(result.ranking, tmp_path / "run.trec", "x")
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert len(lines) == 800
    q, q0, d, rank, score, tag = lines[0].split()
    first = result.ranking.filter(pa.compute.equal(result.ranking["rank"], 1)).to_pylist()
    best = min(first, key=lambda r: r["query_id"])
    assert (q, q0, d, rank, tag) == (best["query_id"], "Q0", best["doc_id"], "1", "x")
    assert float(score) == pytest.approx(best["fused_score"], rel=1e-7)


def test_hybrid_search_and_rank_of(docs, tmp_path):
    enc = HashEncoder()
    cfg = RetrievalConfig(depth=50)
    r = HybridRetriever(docs, cfg, tmp_path, encoder=enc)
    hits = r.search(["vitamin calcium bone"], k=5)
    assert len(hits) == 1 and len(hits[0]) == 5
    top_doc = hits[0][0][0]
    again = HybridRetriever(docs, cfg, tmp_path, encoder=enc).reused  # persisted indexes found
    assert again["bm25"] and again["embeddings"]
    assert r.rank_of(["vitamin calcium bone", "vitamin calcium bone"], [top_doc, hits[0][3][0]], k=5) == [1, 4]
    assert r.rank_of(["vitamin calcium bone"], ["d0000"], k=5) == [None]     # a protein doc
    assert r.search(["vitamin calcium bone"], k=5, fusion="rrf")[0][0][0] == top_doc


def test_in_memory_retriever_and_bad_input(docs):
    r = HybridRetriever(docs, RetrievalConfig(depth=10), None, encoder=HashEncoder())
    assert len(r.search(["protein aggregation"], k=3)[0]) == 3
    import pyarrow as pa
    with pytest.raises(ValueError):
        retrieve(docs, pa.table({"query_id": ["a", "a"], "text": ["x", "y"]}), RetrievalConfig(), None,
                 encoder=HashEncoder())
