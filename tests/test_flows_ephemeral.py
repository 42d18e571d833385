"""The flows without any Prefect server: Prefect's ephemeral mode (a temporary server on a fresh
SQLite database in a fresh PREFECT_HOME), as the README's main command runs them. A second run, in a
new process, finds every stage in the record store (`<work_dir>/_stages/`); after an output file is deleted, that stage
(only) is recomputed."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.prefect_local import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SETS = ["--set", "data.collection=cranfield", "--set", 'queries.splits=["test"]',
        "--set", "queries.leakage_eval_splits=[]", "--set", "queries.max_queries=5"]

# process B: the same flow twice in one process (one ephemeral server), deleting an output between
SECOND = r"""
import json, sys
from pathlib import Path
from flows.__main__ import main
work = Path(sys.argv[1])
main(["mine-queries", "--work-dir", str(work), *sys.argv[2:]])
second = json.loads((work / "flow_summary_mine_queries.cached_rerun.json").read_text())  # first run's summary kept
kept = json.loads((work / "flow_summary_mine_queries.json").read_text())
assert {v["state"] for v in kept["stages"].values()} == {"ran"}, kept
(work / "mine_queries" / "mined_queries.parquet").unlink()
main(["mine-queries", "--work-dir", str(work), *sys.argv[2:]])
third = json.loads((work / "flow_summary_mine_queries.json").read_text())
print("RESULT " + json.dumps([second, third]))
"""


def _env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(tmp_path / "prefect_home"), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    return env


def _check(r):
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-5000:])
    assert "temporary server" in r.stdout + r.stderr  # it really ran in ephemeral mode


def test_flow_runs_in_ephemeral_mode_and_resumes_from_cache(tmp_path):
    work = tmp_path / "work"
    r = subprocess.run([sys.executable, "-m", "flows", "mine-queries", "--work-dir", str(work), *SETS],
                       cwd=str(REPO), env=_env(tmp_path), capture_output=True, text=True, timeout=400)
    _check(r)
    assert f"run summary: {work / 'flow_summary_mine_queries.json'}" in r.stdout
    first = json.loads((work / "flow_summary_mine_queries.json").read_text())
    assert {k: v["state"] for k, v in first["stages"].items()} == {"load": "ran", "mine_queries": "ran"}
    assert first["stages"]["mine_queries"]["stats"]["kept"] == 5

    r = subprocess.run([sys.executable, "-c", SECOND, str(work), *SETS], cwd=str(REPO), env=_env(tmp_path),
                       capture_output=True, text=True, timeout=400)
    _check(r)
    second, third = json.loads(r.stdout.split("RESULT ", 1)[1])
    assert {k: v["state"] for k, v in second["stages"].items()} == {"load": "cached", "mine_queries": "cached"}
    assert {k: v["state"] for k, v in third["stages"].items()} == {"load": "cached", "mine_queries": "ran"}
    assert (work / "mine_queries" / "mined_queries.parquet").exists()
