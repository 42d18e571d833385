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


KILL_SETS = {"data.collection": "cranfield", "queries.splits": ["test"], "queries.leakage_eval_splits": [],
             "queries.max_queries": 4, "retrieval.max_seq_length": 32, "retrieval.pool_top": 8,
             "retrieval.pool_sampled": 4, "judges.judges": [{"id": "pw", "kind": "pointwise"}],
             "judges.shard_queries": 1, "llm.cache_mode": "per_writer"}
KILL_PAIRS = 4 * 12


def _answers(work) -> set[str]:
    """Request hashes of the complete answer lines in the per-writer cache (a line cut by the kill is
    not an answer)."""
    keys = set()
    for f in (work / "llm_cache.d").glob("*.jsonl"):
        for line in f.read_bytes().split(b"\n")[:-1]:
            if line.startswith(b'{"k":"'):
                keys.add(line[6:70].decode())
    return keys


def test_killed_sharded_judge_redoes_only_unfinished_shards_and_pays_no_answer_twice(tmp_path):
    """`grouprank run --shard-workers 2` killed with SIGKILL (runner and workers) while judging: the
    rerun runs only the shards without a completion record, sends only the requests with no answer
    in the cache, and every pair is judged once."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.support.fake_openai_server import start_local_server
    from tests.support.prefect_local import REPO
    srv = start_local_server("tests.support.judge_responder:respond", latency_ms=400, log_path=tmp_path / "srv.log",
                             env={"GROUPRANK_JUDGE_CORPUS": "cranfield"}, startup_timeout=180)
    work = tmp_path / "w"
    sets = {**KILL_SETS, "llm.endpoints": [{"name": "local", "base_url": srv.base_url, "model": "local-responder",
                                            "timeout_s": 300, "max_concurrency": 2}]}
    cmd = [sys.executable, "-m", "grouprank.cli", "run", "--stages", "judge", "--shard-workers", "2",
           "--work-dir", str(work), *[a for k, v in sets.items() for a in ("--set", f"{k}={json.dumps(v)}")]]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    recs = lambda: sorted((work / "_stages" / "judge.shards").rglob("*.json"))  # noqa: E731
    try:
        proc = subprocess.Popen(cmd, cwd=str(REPO), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None and not recs():
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-3000:]!r}"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        done = {p.name: p.stat().st_mtime_ns for p in recs()}
        assert 1 <= len(done) < 4, done
        answered = _answers(work)
        assert len(answered) < KILL_PAIRS
        srv.reset()
        r = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=400)
        assert r.returncode == 0, r.stderr[-4000:]
        stage = json.loads(r.stdout)["stages"]["judge"]
        assert stage["shards"]["shards"] == 4 and stage["shards"]["shards_ran"] == 4 - len(done)
        assert all(p.stat().st_mtime_ns == done[p.name] for p in recs() if p.name in done)  # untouched
        # no answered request was sent again: the rerun sent exactly the unanswered ones
        assert srv.stats(detail=False)["requests"] == KILL_PAIRS - len(answered)
        assert stage["llm"]["calls"] == 0  # the merge: every answer in the cache
    finally:
        srv.stop()
    rows = pq.read_table(stage["outputs"]["judgments"]).to_pylist()
    assert len(rows) == KILL_PAIRS and all(r["status"] == "ok" for r in rows)
    assert len({(r["query_id"], r["doc_id"]) for r in rows}) == KILL_PAIRS  # each pair once
    assert len(_answers(work)) == KILL_PAIRS
