"""Shard plans in the runner core (`grouprank.shards`), on the retrieve stage's corpus encoding.

- `grouprank run --shard-workers 2` killed with SIGKILL mid-encoding: the rerun redoes only the
  shards without a completion record (the finished ones are not touched), and the outputs are
  byte-identical to the unsharded run.
- the plan: one shard per store shard; none when the embeddings are complete; records of another
  cache key are dropped; a failing shard is named.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.prefect_local import REPO

SETS = {"data.collection": "cranfield", "queries.splits": ["test"], "queries.leakage_eval_splits": [],
        "queries.max_queries": 4, "retrieval.shard_size": 100, "retrieval.max_seq_length": 32}
N_SHARDS = 14  # 1,400 documents
COMPARED = ("candidates.parquet", "candidates.trec", "run.trec", "run_bm25.trec", "run_dense.trec")


def _cfg(work):
    from grouprank.config import RunConfig
    return RunConfig.load(None, {**SETS, "work_dir": str(work)})


def _hashes(folder: Path) -> dict[str, str]:
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in COMPARED}


def _records(work: Path) -> dict[int, Path]:
    return {int(p.stem): p for p in (work / "_stages" / "retrieve.shards").rglob("*.json")}


def _cli(work: Path) -> list[str]:
    sets = [a for k, v in SETS.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    return [sys.executable, "-m", "grouprank.cli", "run", "--stages", "retrieve", "--shard-workers", "2",
            "--work-dir", str(work), *sets]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_killed_pool_run_redoes_only_unfinished_shards(tmp_path):
    from grouprank.executor import run_pipeline
    run_pipeline(_cfg(tmp_path / "unsharded"), ["retrieve"], sharded=False, log_fn=lambda m: None)
    reference = _hashes(tmp_path / "unsharded" / "retrieve")

    work = tmp_path / "sharded"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen(_cli(work), cwd=str(REPO), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (work / "_stages" / "retrieve.shards").exists() and len(_records(work)) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-3000:]!r}"
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its pool's workers
    proc.wait()
    proc.stderr.close()
    done = {i: p.stat().st_mtime_ns for i, p in _records(work).items()}
    assert 3 <= len(done) < N_SHARDS, done
    assert not (work / "retrieve" / "candidates.parquet").exists()

    r = subprocess.run(_cli(work), cwd=str(REPO), env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-4000:]
    stage = json.loads(r.stdout)["stages"]["retrieve"]
    assert stage["state"] == "ran"
    assert stage["shards"]["shards"] == N_SHARDS
    assert stage["shards"]["shards_ran"] == N_SHARDS - len(done)  # only the unfinished ones
    assert stage["stats"]["time.dense_docs_encoded"] == 0.0  # the merge took the workers' parts
    after = _records(work)
    assert sorted(after) == list(range(N_SHARDS))
    assert all(after[i].stat().st_mtime_ns == t for i, t in done.items())  # finished shards untouched
    assert _hashes(work / "retrieve") == reference


def test_plan_one_shard_per_store_shard_and_none_once_encoded(tmp_path, monkeypatch):
    """The plan and the completion records, with the shards run in process (the default mapper)."""
    from grouprank import shards
    from grouprank.first_stage import sharding
    from grouprank.stage_list import all_stages
    from grouprank.stage_run import read_inputs
    from grouprank.executor import run_pipeline
    cfg = _cfg(tmp_path)
    up = run_pipeline(cfg, ["mine_queries"], log_fn=lambda m: None)["stages"]
    st = all_stages()["retrieve"]
    paths = {"documents": up["load"]["outputs"]["documents"],
             "mined_queries": up["mine_queries"]["outputs"]["mined_queries"]}
    data = read_inputs(st, paths)
    specs, pending = shards.plan(st, cfg, data, "key1")
    assert len(specs) == N_SHARDS and pending == specs
    assert [s.params["store_shard"] for s in specs] == list(range(N_SHARDS))
    assert specs[3].label == "retrieve[4/14]"
    rec = shards.run_shard(st, cfg, data, specs[3])
    assert rec["state"] == "ran" and rec["stats"]["documents"] == 100
    assert shards.run_shard(st, cfg, data, specs[3])["state"] == "cached"
    assert [s.index for s in shards.plan(st, cfg, data, "key1")[1]] == [i for i in range(N_SHARDS) if i != 3]
    # another cache key (another configuration or input): the old records go, every shard is pending
    assert len(shards.plan(st, cfg, data, "key2")[1]) == N_SHARDS
    assert not shards.shard_dir(cfg.work_path, "retrieve", "key1").exists()
    # a shard given documents that are not the plan's corpus fails, named
    bad = data["documents"].slice(0, 10)
    with pytest.raises(shards.ShardError, match=r"retrieve\[1/14\] failed on .* pid"):
        shards.run_shard(st, cfg, {**data, "documents": bad}, specs[0])
    from grouprank import stage_run
    reads, real = [], stage_run._read_table
    monkeypatch.setattr(stage_run, "_read_table", lambda port, path: reads.append(port.name) or real(port, path))
    summary = run_pipeline(cfg, ["retrieve"], log_fn=lambda m: None)
    assert summary["stages"]["retrieve"]["shards"]["shards"] == N_SHARDS
    assert sorted(reads) == ["documents", "mined_queries"]  # the plan and the merge share one read
    assert sharding.plan(cfg, data) == []  # the embeddings are complete: nothing to split


def test_a_worker_reads_a_stage_s_inputs_once_for_all_its_shards(tmp_path):
    """Reading (and schema-checking) the documents for every shard made the time per document grow
    with N; the same files are read once per process, a rewritten file is read again."""
    import time as _time

    from data_schemas import DOCUMENTS, QUERIES
    from grouprank import shards
    from grouprank.stage_list import all_stages
    st = all_stages()["retrieve"]
    docs = tmp_path / "documents.parquet"
    DOCUMENTS.write(DOCUMENTS.from_records([{"doc_id": "d1", "title": None, "text": "a b", "collection": "t"}]), docs)
    qs = tmp_path / "queries.parquet"
    QUERIES.write(QUERIES.from_records([{"query_id": "q1", "text": "a", "collection": "t", "split": "test",
                                         "source": "existing", "decision": "kept"}]), qs)
    paths = {"documents": str(docs), "mined_queries": str(qs)}
    first = shards.read_inputs_once(st, paths)
    assert shards.read_inputs_once(st, dict(paths)) is first
    _time.sleep(0.01)
    DOCUMENTS.write(DOCUMENTS.from_records([{"doc_id": "d2", "title": None, "text": "c d", "collection": "t"}]), docs)
    again = shards.read_inputs_once(st, paths)
    assert again is not first and again["documents"].column("doc_id").to_pylist() == ["d2"]
