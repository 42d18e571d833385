"""Sharded retrieve and judge on a cluster: the Prefect flow maps the retrieve stage's corpus-encoding
shards and the judge stage's query shards as tasks on its thread runner, on a local Dask cluster and
on a local Ray cluster (2 workers, 1 thread each). The retrieve outputs are byte-identical to the
unsharded in-process run (so to one another), and the judgments are its rows; on Dask and Ray the
shards run on the workers, not in the flow's process, and each worker process loads the encoder
once whatever the number of shards it runs (4 shards on 2 workers). The judge's LLM is a real HTTP
server on 127.0.0.1 (the scripted judge responder): each request reaches it once per run, from a
shard; the merge finds every answer in the per-writer cache."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.support.prefect_local import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# 1,400 documents in 4 shards of 350; a short encoder window keeps the encoding seconds long; 4
# queries x 12 pooled candidates judged pointwise in 2 shards of 2 queries
SETS = {"data.collection": "cranfield", "queries.splits": ["test"], "queries.leakage_eval_splits": [],
        "queries.max_queries": 4, "retrieval.shard_size": 350, "retrieval.max_seq_length": 32,
        "retrieval.pool_top": 8, "retrieval.pool_sampled": 4,
        "judges.judges": [{"id": "pw", "kind": "pointwise"}], "judges.shard_queries": 2,
        "llm.cache_mode": "per_writer"}
N_SHARDS = 4
N_PAIRS = 4 * 12
# the stage's outputs that hold no path of their work dir and no timing: the same bytes or not
COMPARED = ("candidates.parquet", "candidates.trec", "run.trec", "run_bm25.trec", "run_dense.trec")

FLOWS = r"""
import json, os, sys
sets = json.loads(sys.argv[2])
from flows.__main__ import get_flow
from flows.runners import make_task_runner
from grouprank.config import RunConfig
res = {"flow_pid": os.getpid()}
for engine in sys.argv[3:]:
    flow = get_flow("judge").with_options(task_runner=make_task_runner(engine, n_workers=2))
    summary = flow(config=RunConfig.load(None, {**sets, "work_dir": os.path.join(sys.argv[1], engine)}))
    res[engine] = {n: summary["stages"][n] for n in ("retrieve", "judge")}
print("RESULT " + json.dumps(res, default=str))
"""


def _env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(tmp_path / "prefect_home"), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PYTHONPATH": str(REPO),
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE",
                "RAY_USAGE_STATS_ENABLED": "0", "GROUPRANK_RAY_OBJECT_STORE_MB": "200"})
    return env


def _hashes(folder: Path) -> dict[str, str]:
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in COMPARED}


def _shard_records(work: Path, stage: str = "retrieve") -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((work / "_stages" / f"{stage}.shards").rglob("*.json"))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("sharded_cluster")
    from tests.support.fake_openai_server import start_local_server
    srv = start_local_server("tests.support.judge_responder:respond", log_path=base / "server.log",
                             env={"GROUPRANK_JUDGE_CORPUS": "cranfield"}, startup_timeout=180)
    sets = {**SETS, "llm.endpoints": [{"name": "local", "base_url": srv.base_url, "model": "local-responder",
                                       "timeout_s": 300, "max_concurrency": 4}]}
    try:
        # the reference: the unsharded stages in this process
        from grouprank.config import RunConfig
        from grouprank.executor import run_pipeline
        ref = run_pipeline(RunConfig.load(None, {**sets, "work_dir": str(base / "unsharded")}), ["judge"],
                           sharded=False, log_fn=lambda m: None)
        assert "shards" not in ref["stages"]["retrieve"] and "shards" not in ref["stages"]["judge"]
        assert srv.stats(detail=False)["requests"] == N_PAIRS
        r = subprocess.run([sys.executable, "-c", FLOWS, str(base), json.dumps(sets), "thread", "dask", "ray"],
                           cwd=str(REPO), env=_env(base), capture_output=True, text=True, timeout=560)
        assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-6000:])
        requests = srv.stats(detail=False)["requests"]
    finally:
        srv.stop()
    res = json.loads(r.stdout.split("RESULT ", 1)[1])
    return {"base": base, "reference": _hashes(base / "unsharded" / "retrieve"), "requests": requests,
            "judgments": pq.read_table(ref["stages"]["judge"]["outputs"]["judgments"]).to_pylist(), **res}


@pytest.mark.parametrize("engine,where", [("thread", "pid "), ("dask", "dask-worker "), ("ray", "ray-worker ")])
def test_sharded_retrieve_on_cluster_is_byte_identical(runs, engine, where):
    work = runs["base"] / engine
    stage = runs[engine]["retrieve"]
    assert stage["state"] == "ran"
    assert stage["shards"]["shards"] == N_SHARDS and stage["shards"]["shards_ran"] == 0  # the tasks ran them
    assert _hashes(work / "retrieve") == runs["reference"]
    # the merge ran on a worker too, and found the embeddings encoded
    assert stage["executor"].startswith(where), stage["executor"]
    assert stage["stats"]["time.dense_docs_encoded"] == 0.0
    recs = _shard_records(work)
    assert sorted(r["index"] for r in recs) == list(range(N_SHARDS))
    assert sum(r["stats"]["documents"] for r in recs) == 1400
    pids = {r["worker"].rsplit(" ", 1)[1] for r in recs}
    if engine == "thread":  # threads of the flow's own process
        assert pids == {str(runs["flow_pid"])}, pids
    else:
        assert str(runs["flow_pid"]) not in pids and 1 <= len(pids) <= 2, pids
    # each worker process loaded the encoder once, for all the shards it ran
    assert {r["stats"]["model_loads_in_worker"] for r in recs} == {1}, recs


def test_each_judge_request_once_from_a_shard(runs):
    """Over the reference and the three runners, the server answered each pair once per run."""
    assert runs["requests"] == 4 * N_PAIRS


@pytest.mark.parametrize("engine,where", [("thread", "pid "), ("dask", "dask-worker "), ("ray", "ray-worker ")])
def test_sharded_judge_on_cluster_gives_the_unsharded_judgments(runs, engine, where):
    work = runs["base"] / engine
    stage = runs[engine]["judge"]
    assert stage["state"] == "ran" and stage["shards"]["shards"] == 2
    assert stage["llm"]["calls"] == 0 and stage["llm"]["cached_calls"] == N_PAIRS  # the merge sent nothing
    recs = _shard_records(work, "judge")
    assert sorted(r["index"] for r in recs) == [0, 1]
    assert sum(r["stats"]["calls"] for r in recs) == N_PAIRS and sum(r["stats"]["pairs"] for r in recs) == N_PAIRS
    assert stage["executor"].startswith(where), stage["executor"]
    pids = {r["worker"].rsplit(" ", 1)[1] for r in recs}
    assert (pids == {str(runs["flow_pid"])}) if engine == "thread" else (str(runs["flow_pid"]) not in pids), pids
    assert pq.read_table(work / "judge" / "judgments.parquet").to_pylist() == runs["judgments"]


def test_ray_runner_settings():
    """A local Ray gets the asked slots and a small object store; an address goes to Ray as is."""
    from flows.runners import make_task_runner
    local = make_task_runner("ray", n_workers=2)
    assert type(local).__name__ == "RayTaskRunner" and local.address is None
    assert local.init_kwargs["num_cpus"] == 2 and local.init_kwargs["object_store_memory"] == 200 * 2**20
    remote = make_task_runner("ray://head:10001")
    assert remote.address == "ray://head:10001" and "num_cpus" not in remote.init_kwargs  # the cluster's own
