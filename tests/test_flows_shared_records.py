"""One runner core, one record store: a stage finished by the in-process runner (`grouprank
mine-queries`, i.e. `grouprank run`'s executor) is reused by the Prefect flow on the same work dir,
which then does no work (its tasks end "Cached" and no output file is rewritten), and the other way
round. Before the runner core, `<work_dir>/_stages/` and Prefect's result store never read each
other, so each runner recomputed everything the other had made."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.prefect_local import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SETS = ["--set", "data.collection=cranfield", "--set", 'queries.splits=["test"]',
        "--set", "queries.leakage_eval_splits=[]", "--set", "queries.max_queries=4"]

# in one process (one ephemeral Prefect server): the flow on the CLI's work dir, then on a fresh one;
# prints each summary and the Prefect state names of the task runs
FLOWS = r"""
import json, sys
from flows.__main__ import get_flow
from grouprank.config import RunConfig
from prefect import get_client
cli_work, fresh, sets = sys.argv[1], sys.argv[2], sys.argv[3:]
def overrides(work):
    out = {"work_dir": work}
    for i in range(0, len(sets), 2):
        k, v = sets[i + 1].split("=", 1)
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out
flow = get_flow("mine-queries")
res = {}
for name, work in (("after_cli", cli_work), ("fresh", fresh)):
    state = flow(config=RunConfig.load(None, overrides(work)), return_state=True)
    summary = state.result()
    with get_client(sync_client=True) as c:
        runs = c.read_task_runs()
    res[name] = {"summary": summary, "task_states": {r.name: r.state.name for r in runs
                                                      if r.flow_run_id == state.state_details.flow_run_id}}
print("RESULT " + json.dumps(res, default=str))
"""


def _env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(tmp_path / "prefect_home"), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PYTHONPATH": str(REPO),
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    return env


def _cli(work, tmp_path) -> dict:
    r = subprocess.run([sys.executable, "-m", "grouprank.cli", "mine-queries", "--work-dir", str(work), "--json", *SETS],
                       cwd=str(REPO), env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout)


def _mtimes(work) -> dict[str, int]:
    return {str(p.relative_to(work)): p.stat().st_mtime_ns for p in work.rglob("*.parquet")}


def test_cli_and_flow_reuse_each_others_stages(tmp_path):
    cli_work, fresh = tmp_path / "cli_first", tmp_path / "flow_first"
    first = _cli(cli_work, tmp_path)
    assert {k: v["state"] for k, v in first["stages"].items()} == {"load": "ran", "mine_queries": "ran"}
    made = _mtimes(cli_work)

    r = subprocess.run([sys.executable, "-c", FLOWS, str(cli_work), str(fresh), *SETS], cwd=str(REPO),
                       env=_env(tmp_path), capture_output=True, text=True, timeout=500)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-5000:])
    res = json.loads(r.stdout.split("RESULT ", 1)[1])

    # CLI -> flow: every stage reused from the CLI's records, no task did work, no output rewritten
    after_cli = res["after_cli"]
    assert {k: v["state"] for k, v in after_cli["summary"]["stages"].items()} == \
        {"load": "cached", "mine_queries": "cached"}
    assert after_cli["task_states"] == {"load": "Cached", "mine_queries": "Cached"}
    assert _mtimes(cli_work) == made
    assert after_cli["summary"]["stages"]["mine_queries"]["outputs"] == first["stages"]["mine_queries"]["outputs"]

    # flow -> CLI: the flow ran both stages on a fresh work dir; the CLI reuses them
    assert {k: v["state"] for k, v in res["fresh"]["summary"]["stages"].items()} == \
        {"load": "ran", "mine_queries": "ran"}
    assert res["fresh"]["task_states"] == {"load": "Completed", "mine_queries": "Completed"}
    made = _mtimes(fresh)
    again = _cli(fresh, tmp_path)
    assert {k: v["state"] for k, v in again["stages"].items()} == {"load": "cached", "mine_queries": "cached"}
    assert _mtimes(fresh) == made
