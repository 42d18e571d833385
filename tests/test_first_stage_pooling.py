"""The paper's pool recipe: top 10 + 40 sampled from ranks 11-200, seeded per query."""
import numpy as np
import pyarrow as pa
import pytest

from data_schemas import CANDIDATES
from grouprank.first_stage.pooling import pool, select_pool


def _ranking(qids, depth=200):
    rows = {"query_id": [], "doc_id": [], "rank": [], "fused_score": [], "bm25_score": [], "bm25_rank": [],
            "dense_score": [], "dense_rank": [], "fusion": []}
    for q in qids:
        for r in range(1, depth + 1):
            rows["query_id"].append(q)
            rows["doc_id"].append(f"{q}-d{r}")
            rows["rank"].append(r)
            rows["fused_score"].append(1.0 - r / 1000)
            rows["bm25_score"].append(float(depth - r))
            rows["bm25_rank"].append(r if r % 2 else None)
            rows["dense_score"].append(0.5)
            rows["dense_rank"].append(r)
            rows["fusion"].append("minmax")
    return pa.table(rows)


def test_recipe_sizes_and_ranges():
    chosen, sampled = select_pool(np.arange(1, 201), "q1")
    assert len(chosen) == 50
    assert list(chosen[~sampled]) == list(range(1, 11))
    s = chosen[sampled]
    assert len(s) == 40 and len(set(s)) == 40
    assert s.min() >= 11 and s.max() <= 200
    assert list(chosen) == sorted(chosen)


def test_deterministic_per_seed_and_query():
    a, _ = select_pool(np.arange(1, 201), "q1", seed=7)
    b, _ = select_pool(np.arange(1, 201), "q1", seed=7)
    c, _ = select_pool(np.arange(1, 201), "q1", seed=8)
    d, _ = select_pool(np.arange(1, 201), "q2", seed=7)
    assert list(a) == list(b)
    assert list(a) != list(c)
    assert list(a) != list(d)


def test_sampling_is_roughly_uniform_over_the_window():
    counts = np.zeros(201)
    for i in range(400):
        c, s = select_pool(np.arange(1, 201), f"q{i}")
        counts[c[s]] += 1
    window = counts[11:201]
    # 400 * 40 / 190 ~ 84 expected per rank; no rank outside 11..200 is ever sampled
    assert counts[:11].sum() == 0
    assert 40 < window.min() and window.max() < 140


def test_configurable_sizes_short_lists_and_overlap():
    c, s = select_pool(np.arange(1, 31), "q", top=5, sampled=10, sample_from=(6, 30))
    assert list(c[~s]) == [1, 2, 3, 4, 5] and len(c[s]) == 10 and c[s].min() >= 6
    # fewer candidates than asked: everything available, nothing invented
    c, s = select_pool(np.arange(1, 16), "q")
    assert list(c) == list(range(1, 16)) and s.sum() == 5
    # a sampling range overlapping the top block never re-samples the top
    c, s = select_pool(np.arange(1, 201), "q", top=20, sampled=40, sample_from=(11, 200))
    assert c[s].min() >= 21 and len(set(c)) == 60
    with pytest.raises(ValueError):
        select_pool(np.arange(1, 10), "q", sample_from=(20, 10))


def test_pool_table_schema_provenance_and_order_independence(tmp_path):
    ranking = _ranking(["q1", "q2", "q3"])
    cands = pool(ranking, top=10, sampled=40, sample_from=(11, 200), seed=13, run_path=tmp_path / "pool.trec")
    CANDIDATES.validate_table(cands)
    df = cands.to_pandas()
    assert (df.groupby("query_id").size() == 50).all()
    assert set(df[df["pool"] == "top"]["rank"]) == set(range(1, 11))
    assert df[df["pool"] == "sampled"]["rank"].between(11, 200).all()
    # per-retriever provenance is carried over from the ranking, nulls included
    row = df[(df["query_id"] == "q1") & (df["rank"] == 2)].iloc[0]
    assert row["bm25_score"] == 198.0 and np.isnan(row["bm25_rank"]) and row["dense_rank"] == 2
    # the pool of q2 does not depend on which other queries are in the run, or their order
    alone = pool(_ranking(["q2"]), seed=13).to_pandas()
    reordered = pool(_ranking(["q3", "q2"]), seed=13).to_pandas()
    assert sorted(alone["doc_id"]) == sorted(df[df["query_id"] == "q2"]["doc_id"]) == \
        sorted(reordered[reordered["query_id"] == "q2"]["doc_id"])
    lines = (tmp_path / "pool.trec").read_text().splitlines()
    assert len(lines) == 150
    q, q0, d, r, s, tag = lines[0].split()
    assert q0 == "Q0" and tag == "grouprank-pool" and float(s) > 0


def test_pool_keep_all():
    cands = pool(_ranking(["q1"], depth=30), top=30, sampled=0)
    assert cands.num_rows == 30 and set(cands["pool"].to_pylist()) == {"all"}
