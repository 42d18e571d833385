"""One writer per work dir: a second run refuses (or waits) naming the holder; a lock left by a
killed run is taken over."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grouprank.work_lock import HOLDER_NAME, WorkDirLocked, holder, work_dir_lock

REPO = Path(__file__).resolve().parents[1]
SETS = ["--set", "data.collection=cranfield", "--set", 'queries.splits=["test"]',
        "--set", "queries.leakage_eval_splits=[]", "--set", "queries.max_queries=4",
        "--set", "retrieval.max_seq_length=32"]
HOLD = "import sys, time\nfrom grouprank.work_lock import work_dir_lock\n" \
       "with work_dir_lock(sys.argv[1], 'holder-script'):\n    print('held', flush=True)\n    time.sleep(600)\n"


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra}


def _cli(args, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "grouprank.cli", *args], cwd=REPO, env=_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(cond, timeout=120.0):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


@pytest.mark.timeout(300)
def test_two_runs_in_one_work_dir_cannot_both_write(tmp_path):
    """Two real `grouprank retrieve` commands with different pool settings, the second started while
    the first runs: the second refuses without writing, naming the first; the first's outputs and
    summary are its own."""
    work = tmp_path / "w"
    a = _cli(["retrieve", "--work-dir", str(work), *SETS, "--set", "retrieval.pool_top=5"])
    _wait_for(lambda: holder(work) is not None)
    who = holder(work)
    assert who["pid"] == a.pid and "retrieve" in who["command"]
    b = _cli(["retrieve", "--work-dir", str(work), *SETS, "--set", "retrieval.pool_top=7"])
    out_b, err_b = b.communicate(timeout=120)
    assert b.returncode == 2, err_b[-2000:]
    assert f"is in use by pid {a.pid}" in err_b and "retrieve" in err_b, err_b[-2000:]
    assert a.poll() is None  # the first run was still running when the second gave up
    out_a, err_a = a.communicate(timeout=240)
    assert a.returncode == 0, err_a[-3000:]
    summary = json.loads((work / "summary_retrieve.json").read_text())
    import pyarrow.parquet as pq
    cands = pq.read_table(summary["stages"]["retrieve"]["outputs"]["candidates"]).to_pandas()
    assert (cands[cands["pool"] == "top"].groupby("query_id").size() == 5).all()  # run A's pools, not B's
    assert not (work / HOLDER_NAME).exists()  # released


@pytest.mark.timeout(120)
def test_a_second_run_waits_when_asked_and_a_killed_holders_lock_is_taken_over(tmp_path, caplog):
    work = tmp_path / "w"
    h = subprocess.Popen([sys.executable, "-c", HOLD, str(work)], env=_env(), stdout=subprocess.PIPE, text=True)
    assert h.stdout.readline().strip() == "held"
    with pytest.raises(WorkDirLocked, match=rf"pid {h.pid} .*holder-script"):
        with work_dir_lock(work):
            pass
    with pytest.raises(WorkDirLocked, match="after waiting 1 s"):
        with work_dir_lock(work, timeout_s=1.0):
            pass
    h.send_signal(signal.SIGKILL)  # killed: its record stays behind, the OS lock does not
    h.wait()
    assert holder(work)["pid"] == h.pid
    caplog.set_level("WARNING", logger="grouprank.work_lock")
    with work_dir_lock(work, "me") as me:
        assert f"taking over the lock of pid {h.pid}" in caplog.text and "no longer running" in caplog.text
        assert me["pid"] == os.getpid() and holder(work)["command"] == "me"
        with work_dir_lock(work):  # re-entrant in one process
            pass
    assert holder(work) is None


def test_the_holders_command_line_hides_keys(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["grouprank", "judge", "--set", "llm.endpoints.0.api_key=plainsecret123",
                                      "--set", "x=sk-ABCDEFGHIJKLMNOPQRSTUV"])
    with work_dir_lock(tmp_path / "w") as me:
        assert "plainsecret123" not in me["command"] and "sk-ABCDEFGH" not in me["command"]
        assert "judge" in me["command"]


@pytest.mark.timeout(120)
def test_a_prefect_flow_run_takes_the_same_lock(tmp_path):
    """flows.dag.run_stages (the body of every flow) holds the work dir's lock before anything else:
    with another process holding it, the flow stops naming that process."""
    from flows.dag import run_stages
    from grouprank.config import RunConfig
    work = tmp_path / "w"
    h = subprocess.Popen([sys.executable, "-c", HOLD, str(work)], env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert h.stdout.readline().strip() == "held"
        with pytest.raises(WorkDirLocked, match=rf"pid {h.pid}"):
            run_stages(RunConfig(work_dir=str(work)), ("load",), "load")
        assert not (work / "collection").exists()
    finally:
        h.kill()
        h.wait()
