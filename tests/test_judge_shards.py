"""The judge stage in shards of queries (grouprank/judges/sharding.py): two local worker processes
judge the shards through a real HTTP server on 127.0.0.1, their answers meet in the per-writer LLM
cache, and the merge sends nothing more: each request reaches the server once, and the judgments are
the unsharded run's, row for row."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from data_schemas import CANDIDATES, DOCUMENTS, QUERIES
from grouprank.config import JudgeSpec, RunConfig
from tests.test_judges_http import make_cfg, server, small_pool  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _inputs(tmp_path, pool) -> dict[str, str]:
    d = tmp_path / "inputs"
    d.mkdir()
    cand = [{"query_id": q, "doc_id": doc, "rank": i + 1, "fused_score": float(-i), "bm25_score": None,
             "bm25_rank": None, "dense_score": None, "dense_rank": None, "fusion": "minmax", "pool": "top"}
            for q, docs in pool.pools.items() for i, doc in enumerate(docs)]
    paths = {"candidates": d / "candidates.parquet", "documents": d / "documents.parquet",
             "mined_queries": d / "queries.parquet"}
    CANDIDATES.write(CANDIDATES.from_records(cand), paths["candidates"])
    DOCUMENTS.write(DOCUMENTS.from_records([{"doc_id": k, "title": None, "text": v, "collection": "t"}
                                            for k, v in pool.docs.items()]), paths["documents"])
    QUERIES.write(QUERIES.from_records([{"query_id": q, "text": t, "collection": "t", "split": "test",
                                         "source": "existing", "decision": "kept"} for q, t in pool.queries.items()]),
                  paths["mined_queries"])
    return {k: str(v) for k, v in paths.items()}


def _cfg(tmp_path, name, base_url, shard_queries):
    specs = [JudgeSpec(id="pw", kind="pointwise"), JudgeSpec(id="gw", kind="groupwise", group_size=3, passes=2)]
    c = make_cfg(tmp_path / name, base_url, timeout_s=300.0, specs=specs).model_dump(mode="json")
    c["judges"]["shard_queries"] = shard_queries
    c["llm"]["cache_mode"] = "per_writer"
    return RunConfig.model_validate(c)


def test_sharded_judge_sends_each_request_once_and_gives_the_unsharded_judgments(tmp_path, server, small_pool):  # noqa: F811
    from grouprank.executor import run_pipeline
    from grouprank.shard_pool import process_pool
    from grouprank.shards import where
    pool, _ = small_pool
    feed = {"judge": _inputs(tmp_path, pool)}
    server.reset()
    ref = run_pipeline(_cfg(tmp_path, "unsharded", server.base_url, None), ["judge"], overrides=feed,
                       log_fn=lambda m: None)["stages"]["judge"]
    n_requests = server.stats(detail=False)["requests"]
    assert "shards" not in ref and n_requests == pool.n_pairs + 2 * len(pool.pools) * 3  # pw + gw 2 passes x 3 groups

    server.reset()
    cfg = _cfg(tmp_path, "sharded", server.base_url, 1)
    got = run_pipeline(cfg, ["judge"], overrides=feed, shard_map=process_pool(2), log_fn=lambda m: None)["stages"]["judge"]
    assert got["shards"]["shards"] == len(pool.pools) == 3
    workers = got["shards"]["shard_workers"]  # the pool's processes, not this one
    assert workers and all(w.startswith(where().rsplit(" ", 1)[0]) and w != where() for w in workers), workers
    assert server.stats(detail=False)["requests"] == n_requests  # the shards sent them all, once
    assert got["llm"]["calls"] == 0 and got["llm"]["cached_calls"] > 0  # the merge: every answer cached
    recs = sorted((cfg.work_path / "_stages" / "judge.shards").rglob("*.json"))
    assert len(recs) == 3
    ref_t = pq.read_table(ref["outputs"]["judgments"]).to_pylist()
    got_t = pq.read_table(got["outputs"]["judgments"]).to_pylist()
    assert got_t == ref_t and all(r["status"] == "ok" for r in got_t)
    # more than one writer file: the worker processes each appended their own
    assert len(list((cfg.work_path).rglob("*.jsonl"))) >= 2


def test_no_shards_for_the_local_judge_a_dry_run_or_one_shard(tmp_path, small_pool):  # noqa: F811
    from grouprank.judges import sharding
    from grouprank.stage_run import read_inputs
    from grouprank.stage_list import all_stages
    pool, _ = small_pool
    data = read_inputs(all_stages()["judge"], _inputs(tmp_path, pool))
    cfg = _cfg(tmp_path, "w", "http://127.0.0.1:9", 2)
    assert [(p["first"], p["count"]) for p in sharding.plan(cfg, data)] == [(0, 2), (2, 1)]
    for change in ({"dry_run": True}, {"shard_queries": 3}, {"shard_queries": None},
                   {"judges": [{"id": "local", "kind": "local"}]},
                   {"judges": [{"id": "pw", "kind": "pointwise", "select": "uncertain", "budget_pairs": 3},
                               {"id": "local", "kind": "local"}]}):
        c = cfg.model_dump(mode="json")
        c["judges"].update(change)
        assert sharding.plan(RunConfig.model_validate(c), data) == [], change
