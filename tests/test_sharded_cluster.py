"""Sharded retrieve on a cluster: the Prefect flow maps the retrieve stage's corpus-encoding shards
as tasks on its thread runner, on a local Dask cluster and on a local Ray cluster (2 workers, 1
thread each), and the stage's outputs are byte-identical to the unsharded in-process run (so to one
another). On Dask and Ray the shards run on the workers, not in the flow's process, and each worker
process loads the encoder once whatever the number of shards it runs (4 shards on 2 workers)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.prefect_local import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# 1,400 documents in 4 shards of 350; a short encoder window keeps the encoding seconds long
SETS = {"data.collection": "cranfield", "queries.splits": ["test"], "queries.leakage_eval_splits": [],
        "queries.max_queries": 4, "retrieval.shard_size": 350, "retrieval.max_seq_length": 32}
N_SHARDS = 4
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
    flow = get_flow("retrieve").with_options(task_runner=make_task_runner(engine, n_workers=2))
    summary = flow(config=RunConfig.load(None, {**sets, "work_dir": os.path.join(sys.argv[1], engine)}))
    res[engine] = summary["stages"]["retrieve"]
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


def _shard_records(work: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((work / "_stages" / "retrieve.shards").rglob("*.json"))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("sharded_cluster")
    # the reference: the unsharded stage in this process
    from grouprank.config import RunConfig
    from grouprank.executor import run_pipeline
    ref = run_pipeline(RunConfig.load(None, {**SETS, "work_dir": str(base / "unsharded")}), ["retrieve"],
                       sharded=False, log_fn=lambda m: None)
    assert "shards" not in ref["stages"]["retrieve"]
    r = subprocess.run([sys.executable, "-c", FLOWS, str(base), json.dumps(SETS), "thread", "dask", "ray"], cwd=str(REPO),
                       env=_env(base), capture_output=True, text=True, timeout=560)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-6000:])
    res = json.loads(r.stdout.split("RESULT ", 1)[1])
    return {"base": base, "reference": _hashes(base / "unsharded" / "retrieve"), **res}


@pytest.mark.parametrize("engine,where", [("thread", "pid "), ("dask", "dask-worker "), ("ray", "ray-worker ")])
def test_sharded_retrieve_on_cluster_is_byte_identical(runs, engine, where):
    work = runs["base"] / engine
    stage = runs[engine]
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


def test_ray_runner_settings():
    """A local Ray gets the asked slots and a small object store; an address goes to Ray as is."""
    from flows.runners import make_task_runner
    local = make_task_runner("ray", n_workers=2)
    assert type(local).__name__ == "RayTaskRunner" and local.address is None
    assert local.init_kwargs["num_cpus"] == 2 and local.init_kwargs["object_store_memory"] == 200 * 2**20
    remote = make_task_runner("ray://head:10001")
    assert remote.address == "ray://head:10001" and "num_cpus" not in remote.init_kwargs  # the cluster's own
