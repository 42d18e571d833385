"""kill -9 of one Dask worker while the Prefect judge flow maps its shards on a local Dask cluster
(2 worker processes): nothing is lost and nothing is judged twice. The worker that finished the first
shard is killed while it runs its next one; Dask restarts it and runs the lost shard again (or, when
the flow run fails with it, the rerun does). The shards finished before the kill keep their
completion records untouched, the answers the killed worker had received stay in its cache file, so
the server sees again only the requests that were in flight (at most the endpoint's concurrency),
and the judgments hold every pair once."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.support.prefect_local import REPO
from tests.test_judge_shards import KILL_PAIRS, KILL_SETS, _answers
from tests.test_sharded_cluster import _env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FLOW = r"""
import json, sys
from flows.__main__ import get_flow
from flows.runners import make_task_runner
from grouprank.config import RunConfig
flow = get_flow("judge").with_options(task_runner=make_task_runner("dask", n_workers=2))
try:
    s = flow(config=RunConfig.load(None, {**json.loads(sys.argv[2]), "work_dir": sys.argv[1]}))
    print("RESULT " + json.dumps({"ok": True, "judge": s["stages"]["judge"]}, default=str), flush=True)
except BaseException as e:  # the flow run failed with the lost worker: the test reruns it
    print("RESULT " + json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"[:3000]}), flush=True)
"""
CONCURRENCY = 2


def _records(work) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((work / "_stages" / "judge.shards").rglob("*.json"))}


def _flow(work, sets, base) -> subprocess.Popen:
    # output to files, not pipes: the ephemeral Prefect server the flow starts may outlive it and would
    # hold a pipe open
    n = len(list(base.glob("flow*.out")))
    out, err = open(base / f"flow{n}.out", "w"), open(base / f"flow{n}.err", "w")
    proc = subprocess.Popen([sys.executable, "-c", FLOW, str(work), json.dumps(sets)], cwd=str(REPO),
                            env=_env(base), stdout=out, stderr=err, start_new_session=True)
    proc.files = (Path(out.name), Path(err.name))
    out.close(), err.close()
    return proc


def _result(proc: subprocess.Popen, work, timeout: float = 300) -> dict:
    """The flow run's judge facts: from its RESULT line, or from the run summary it writes when it
    has finished. After a worker was killed the process can hang in the local Dask cluster's shutdown
    with the flow run finished and recorded (seen with distributed 2025.x): it is then ended here."""
    summary = work / "flow_summary_judge.json"
    deadline = time.time() + timeout
    done_at = None
    while proc.poll() is None and time.time() < deadline:
        if done_at is None and summary.exists():
            done_at = time.time()
        if done_at is not None and time.time() - done_at > 30:
            break
        time.sleep(0.2)
    if proc.poll() is None:
        import psutil
        left = psutil.Process(proc.pid).children(recursive=True)  # its Prefect server is in a session of its own
        os.killpg(proc.pid, signal.SIGKILL)
        for c in left:
            try:
                c.kill()
            except psutil.NoSuchProcess:
                pass
    proc.wait()
    out, err = (f.read_text() for f in proc.files)
    if "RESULT " in out:
        return json.loads(out.split("RESULT ", 1)[1])
    assert summary.exists(), f"the flow neither finished nor failed within {timeout} s: {err[-4000:]}"
    return {"ok": True, "judge": json.loads(summary.read_text())["stages"]["judge"], "exit_hung": True}


def test_killed_dask_worker_loses_no_pair_and_pays_no_answer_twice(tmp_path):
    from tests.support.fake_openai_server import start_local_server
    srv = start_local_server("tests.support.judge_responder:respond", latency_ms=400, log_path=tmp_path / "srv.log",
                             env={"GROUPRANK_JUDGE_CORPUS": "cranfield"}, startup_timeout=180)
    work = tmp_path / "w"
    sets = {**KILL_SETS, "llm.endpoints": [{"name": "local", "base_url": srv.base_url, "model": "local-responder",
                                            "timeout_s": 300, "max_concurrency": CONCURRENCY}]}
    orphans = []  # what the killed worker had started (e.g. its own ephemeral Prefect server)
    try:
        proc = _flow(work, sets, tmp_path)
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None and not _records(work):
            time.sleep(0.05)
        first = _records(work)
        assert proc.poll() is None and len(first) == 1, f"no shard finished before the flow ended: {first}"
        victim = int(next(iter(first.values()))["worker"].rsplit(" ", 1)[1])
        import psutil
        orphans = psutil.Process(victim).children(recursive=True)
        os.kill(victim, signal.SIGKILL)  # the worker that finished a shard, now on its next one
        killed_at = time.time()
        before = {n: (work / "_stages" / "judge.shards" / r["key"] / n).stat().st_mtime_ns
                  for n, r in _records(work).items()}
        res = _result(proc, work)
        reruns = 0
        while not res["ok"] and reruns < 2:  # the flow run failed with its worker: run it again
            reruns += 1
            res = _result(_flow(work, sets, tmp_path), work)
        assert res["ok"], res
        requests = srv.stats(detail=False)["requests"]
    finally:
        srv.stop()
        for c in orphans:  # dies with the test
            try:
                c.kill()
            except Exception:  # noqa: BLE001 - gone already
                pass
    recs = _records(work)
    assert sorted(r["index"] for r in recs.values()) == [0, 1, 2, 3]
    # the shards finished before the kill were not run again
    for n, mtime in before.items():
        r = recs[n]
        assert (work / "_stages" / "judge.shards" / r["key"] / n).stat().st_mtime_ns == mtime, n
    # the lost shard was run again by a live worker, after the kill
    after = [r for n, r in recs.items() if n not in before]
    assert after and all(int(r["worker"].rsplit(" ", 1)[1]) != victim and r["finished"] > killed_at for r in after)
    # every pair answered once, but the requests in flight on the killed worker (no answer recorded)
    assert KILL_PAIRS <= requests <= KILL_PAIRS + CONCURRENCY, requests
    assert len(_answers(work)) == KILL_PAIRS
    assert res["judge"]["llm"]["calls"] == 0  # the merge found every answer in the cache
    rows = pq.read_table(work / "judge" / "judgments.parquet").to_pylist()
    assert len(rows) == KILL_PAIRS and all(r["status"] == "ok" for r in rows)
    assert len({(r["query_id"], r["doc_id"]) for r in rows}) == KILL_PAIRS
