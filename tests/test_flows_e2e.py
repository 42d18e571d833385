"""End to end on real components: `prefect server start` on a free 127.0.0.1 port (own PREFECT_HOME),
the `process` pool, `prefect deploy --all` from prefect.yaml and a `prefect worker`, all started by
scripts/prefect_local.sh; the local OpenAI-compatible server answers the LLM judge.

1. the nightly (end-to-end) deployment, triggered with a small configuration, runs to COMPLETED
   on the worker; the API shows every stage's task run and the artifacts;
2. the same configuration again: every task run Cached, zero requests reach the LLM server;
   every progress line of every stage (training heartbeats included) is in the run's logs;
3. headless Chromium opens the flow run's page, waits for the artifacts and reads the summary table;
4. the same flow with the Dask task runner (2-worker local cluster) after changing only the judges:
   the stages before judging are Cached, judging and everything after it run (on Dask workers).

The tests of this module run in order and share one server, one worker and one work dir.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.prefect_local import CHROMIUM, REPO, Chromium, LocalPrefect, small_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ARTIFACT_KINDS = {"summary": "markdown", "stage-counts": "table", "grade-distribution": "table",
                  "judge-agreement": "table", "llm-usage": "table", "judge-progress": "progress",
                  "grade-histogram": "markdown", "evaluation": "table", "stage-numbers": "table",
                  "retrieve-progress": "progress", "train-reranker-progress": "progress",
                  "train-retriever-progress": "progress", "evaluate-progress": "progress",
                  "mine-queries-progress": "progress"}

# the progress labels (grouprank.progress) each stage logs in the small configuration
PROGRESS_LABELS = {"judge": ("judge local (local)", "judge llm"),
                   "train_reranker": ("reranker SFT", "reranker GRPO"),
                   "train_retriever": ("retriever training",), "evaluate": ("rerank (llm)",)}
TRAINING_LABELS = ("reranker SFT", "reranker GRPO", "retriever training")


def _expected_stages() -> list[str]:
    from grouprank.stage_list import all_stages
    return list(all_stages())


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("flows_e2e")
    from tests.support.fake_openai_server import start_local_server
    llm = start_local_server(responder="tests.support.judge_responder:respond",
                             env={"GROUPRANK_JUDGE_CORPUS": "cranfield", "GROUPRANK_LOCAL_E5": "0"},
                             log_path=base / "llm_server.log")
    # progress lines every 0.3 s: the tiny trainings' steps outlast that, so their heartbeats (from a
    # thread of their own) show up, and must reach the run's logs
    pf = LocalPrefect(base / "prefect_home", extra_env={"GROUPRANK_PROGRESS_EVERY_S": "0.3"})
    t0 = time.time()
    try:
        pf.start()
    except Exception:
        llm.stop()
        raise
    info = {"base": base, "llm": llm, "pf": pf, "start_s": round(time.time() - t0, 1),
            "work": base / "work", "runs": {}}
    yield info
    times = {"server_start_and_deploy_s": info["start_s"],
             **{k: v.get("wall_s") for k, v in info["runs"].items()}}
    (base / "timings.json").write_text(json.dumps(times, indent=2))
    print(f"\n[flows e2e] wall times (s): {json.dumps(times)}; files in {base}")
    t_stop = time.time()
    out = pf.stop()
    print(f"[flows e2e] stop ({time.time() - t_stop:.1f} s):\n{out}")
    llm.stop()
    # the worker is stopped before the server
    assert out.index("stopping worker") < out.index("stopping server"), out
    assert "server: stopped" in pf.script("status").stdout


def _cfg(env, **judge):
    return small_config(env["work"], env["llm"].base_url, judge_kind=judge.get("kind", "pointwise"))


def _llm_requests(llm) -> int:
    return int(llm.stats(detail=False)["requests"])


def _trigger(env, key: str, cfg: dict) -> dict:
    pf = env["pf"]
    before = _llm_requests(env["llm"])
    t0 = time.time()
    fr_id = pf.run_deployment("synthesize/nightly", {"config": cfg})
    fr = pf.wait_flow_run(fr_id, timeout=800)
    run = {"id": fr_id, "flow_run": fr, "wall_s": round(time.time() - t0, 1),
           "llm_requests": _llm_requests(env["llm"]) - before,
           "task_runs": pf.task_runs(fr_id), "artifacts": pf.artifacts(fr_id)}
    env["runs"][key] = run
    if fr["state"]["type"] != "COMPLETED":
        logs = "\n".join(f"{l['level']} {l['message']}" for l in pf.logs(fr_id))
        pytest.fail(f"flow run ended {fr['state']['type']}: {fr['state'].get('message')}\n{logs[-6000:]}\n"
                    f"--- worker log ---\n{pf.log('worker')[-3000:]}")
    return run


def _data(artifact: dict):
    d = artifact["data"]
    return json.loads(d) if isinstance(d, str) else d


def test_deployments_from_prefect_yaml(env):
    pf = env["pf"]
    # the server's UI build went into PREFECT_HOME (PREFECT_UI_STATIC_DIRECTORY), not the venv
    ui = pf.home / "ui-static"
    assert any(ui.rglob("index.html")), sorted(str(p) for p in ui.rglob("*"))[:5]
    for name in ("synthesize/nightly", "fuse-labels/judge-only", "train-retriever/train-retriever",
                 "train-reranker/train-reranker", "evaluate/evaluate"):
        dep = pf.deployment(name)
        assert dep["work_pool_name"] == "process", name
        assert list(dep["parameter_openapi_schema"]["properties"]) == ["config"], name
        dirs = [s["prefect.deployments.steps.set_working_directory"]["directory"]
                for s in dep.get("pull_steps") or [] if "prefect.deployments.steps.set_working_directory" in s]
        assert [Path(d).resolve() for d in dirs] == [REPO.resolve()], (name, dep.get("pull_steps"))
    nightly = pf.deployment("synthesize/nightly")
    crons = [s["schedule"].get("cron") for s in nightly["schedules"]]
    assert crons == ["0 2 * * *"]
    pools = pf.call("POST", "/work_pools/filter", {})
    assert [p["type"] for p in pools if p["name"] == "process"] == ["process"]
    gcl = pf.call("GET", "/v2/concurrency_limits/llm")
    assert gcl["limit"] >= 1


def test_end_to_end_deployment_run(env):
    cfg = _cfg(env)
    env["pf"].call("DELETE", "/v2/concurrency_limits/llm")  # the flow must create it when missing
    run = _trigger(env, "first", cfg)
    stages = _expected_stages()
    by_name = {t["name"]: t for t in run["task_runs"]}
    assert set(stages) <= set(by_name), (stages, sorted(by_name))
    for s in stages:
        assert by_name[s]["state"]["type"] == "COMPLETED", (s, by_name[s]["state"])
        assert by_name[s]["state"]["name"] == "Completed", (s, by_name[s]["state"]["name"])
    keys = {a["key"]: a for a in run["artifacts"] if a.get("key")}
    want = {f"grouprank-{k}-flowtest" for k in ARTIFACT_KINDS}
    if "export" not in stages:
        want.discard("grouprank-grade-histogram-flowtest")
    if "fuse" not in stages:
        want -= {"grouprank-grade-distribution-flowtest", "grouprank-judge-agreement-flowtest"}
    if "judge" not in stages:
        want -= {"grouprank-judge-progress-flowtest", "grouprank-llm-usage-flowtest"}
    if "evaluate" not in stages:
        want.discard("grouprank-evaluation-flowtest")
    assert want <= set(keys), sorted(set(keys))
    for k, kind in ARTIFACT_KINDS.items():
        key = f"grouprank-{k}-flowtest"
        if key in keys:
            assert keys[key]["type"] == kind, (key, keys[key]["type"])
    summary_md = keys["grouprank-summary-flowtest"]["data"]
    for s in stages:
        assert f"| {s} | ran |" in summary_md
    counts = _data(keys["grouprank-stage-counts-flowtest"])
    counts = [r for r in counts if r["state"] != "not available"]
    assert [r["stage"] for r in counts] == stages and {r["state"] for r in counts} == {"ran"}
    if "evaluate" in stages:
        ev = {r["system"]: r for r in _data(keys["grouprank-evaluation-flowtest"])}
        assert {"bm25", "dense"} <= set(ev) and any(k.startswith("hybrid-") for k in ev), sorted(ev)
        assert all(0.0 <= r["nDCG@10"] <= 1.0 and r["queries"] > 0 for r in ev.values())
    summary = json.loads((env["work"] / "run_summary.json").read_text())
    assert summary["flow_run_id"] == run["id"]
    assert [s for s in summary["stages"]] == stages
    numbers = {(r["stage"], r["number"]) for r in _data(keys["grouprank-stage-numbers-flowtest"])}
    for s in stages:  # every number of every stage, none cut off
        st = summary["stages"][s]["stats"]
        assert {(s, k) for k, v in st.items() if isinstance(v, (int, float, str))} <= numbers, s
    if "judge" in stages:
        assert run["llm_requests"] > 0, "the LLM judge never called the local server"
        assert float(keys["grouprank-judge-progress-flowtest"]["data"]) == 100.0
        logs = " ".join(l["message"] for l in env["pf"].all_logs(run["id"]))
        assert "judge: done in" in logs and "holding" in logs  # numbers logged; `llm` slots taken
        assert env["pf"].call("GET", "/v2/concurrency_limits/llm")["limit"] == 16  # re-created by the flow
    if "export" in stages:
        export = Path(summary["exports"])
        assert list(export.rglob("*.parquet")) and (export / "grade_histogram.png").exists()
        assert "data:image/png;base64," in keys["grouprank-grade-histogram-flowtest"]["data"]
    if "fuse" in stages:
        grades = _data(keys["grouprank-grade-distribution-flowtest"])
        assert sum(r["count"] for r in grades) == summary["stages"]["fuse"]["stats"]["labelled"] > 0
        agree = _data(keys["grouprank-judge-agreement-flowtest"])
        pairs = {(r["a"], r["b"]) for r in agree}
        assert {frozenset(p) for p in pairs} == {frozenset(("local", "llm")),
                                                 frozenset(("human qrels", "fused labels"))}, agree
    if "judge" in stages:
        usage = {(r["scope"], r["metric"]): r["value"] for r in _data(keys["grouprank-llm-usage-flowtest"])}
        # the judge's calls plus the evaluation's reranking calls are every request the server saw
        rerank_calls = usage.get(("evaluate", "rerank.calls"), 0)
        if "evaluate" in stages:
            assert rerank_calls > 0, "the evaluation never reranked through the LLM endpoint"
        assert usage[("judge", "llm.calls")] + rerank_calls == run["llm_requests"], usage
        assert ("judge", "llm.prompt_tokens") in usage


def test_every_progress_line_reaches_the_flow_run_logs(env):
    """Every progress line of every stage, the training heartbeats (logged by a thread of their own)
    included, is in the flow run's logs read through the Prefect API, under its stage's task run; the
    worker's console (the flow run's process output) has no progress line the API lacks."""
    import re
    run = env["runs"].get("first")
    if run is None:
        pytest.skip("no completed run")
    logs = env["pf"].all_logs(run["id"])
    task_of = {t["id"]: t["name"] for t in run["task_runs"]}
    progress = [(task_of.get(l.get("task_run_id")), l["message"]) for l in logs if l["name"] == "grouprank.progress"]
    stages = _expected_stages()
    for stage, labels in PROGRESS_LABELS.items():
        if stage not in stages:
            continue
        for label in labels:
            mine = [m for t, m in progress if m.startswith(label + ":")]
            assert any(m == f"{label}: starting" or m.startswith(f"{label}: starting,") for m in mine), (label, mine)
            assert any(re.match(rf"{re.escape(label)}: [\d,]+/[\d,]+ ", m) for m in mine), (label, mine)
            assert {t for t, m in progress if m.startswith(label + ":")} == {stage}, (label, stage)
    beats = [(t, m) for t, m in progress if ", step running for " in m]
    assert any(m.startswith(TRAINING_LABELS) for _, m in beats), beats[:5]
    assert all(t in ("train_reranker", "train_retriever", "evaluate", "judge", "retrieve", "mine_queries")
               for t, m in beats), beats
    # the run's console output (streamed into the worker's log): no progress line missing from the API
    console = [ln.split("grouprank.progress - ", 1)[1].strip() for ln in env["pf"].log("worker").splitlines()
               if "grouprank.progress - " in ln]
    assert console, "no progress line in the worker's log (output of the flow run's process)"
    api = [m for _, m in progress]
    # (a console line may be wrapped: its first part starts an API message)
    missing = [c for c in set(console) if not any(m.startswith(c) for m in api)]
    assert not missing, sorted(missing)[:10]
    # the model lock: waits logged and counted apart from the work
    counts = {r["stage"]: r for r in _data({a["key"]: a for a in run["artifacts"] if a.get("key")}
                                            ["grouprank-stage-counts-flowtest"])}
    for s in ("train_reranker", "train_retriever", "evaluate", "retrieve"):
        if s in counts:
            assert counts[s]["model_lock_wait_s"] is not None, counts[s]
    for s in ("load", "fuse", "export"):
        if s in counts:
            assert counts[s]["model_lock_wait_s"] is None, counts[s]
    arts = {a["key"]: a for a in run["artifacts"] if a.get("key")}
    for s in stages:
        from grouprank.stage_list import all_stages
        if all_stages()[s].progress_parts:
            art = arts.get(f"grouprank-{s.replace('_', '-')}-progress-flowtest")
            assert art is not None and art["type"] == "progress" and float(art["data"]) == 100.0, (s, art)


def test_second_run_is_all_cached_and_calls_no_llm(env):
    # the first run is this test's input: its failure fails this test too (a skip here hid it)
    assert "first" in env["runs"], "the first flow run did not complete (see test_end_to_end_deployment_run)"
    run = _trigger(env, "second", _cfg(env))
    stages = _expected_stages()
    states = {t["name"]: t["state"]["name"] for t in run["task_runs"]}
    assert states == {s: "Cached" for s in stages}, states
    assert run["llm_requests"] == 0
    # the first run's summary is kept; the cached rerun's goes beside it
    first = json.loads((env["work"] / "run_summary.json").read_text())
    assert first["flow_run_id"] == env["runs"]["first"]["id"] and {v["state"] for v in first["stages"].values()} == {"ran"}
    summary = json.loads((env["work"] / "run_summary.cached_rerun.json").read_text())
    assert summary["flow_run_id"] == run["id"]
    assert {v["state"] for v in summary["stages"].values()} == {"cached"}
    keys = {a["key"] for a in run["artifacts"] if a.get("key")}
    assert "grouprank-summary-flowtest" in keys and "grouprank-stage-counts-flowtest" in keys


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium not installed (scripts/run_tests.sh installs it)")
def test_browser_shows_the_run_and_its_artifacts(env, tmp_path):
    run = env["runs"].get("first")
    assert run is not None, "the first flow run did not complete"
    pf = env["pf"]
    shots = env["base"] / "screenshots"
    shots.mkdir(exist_ok=True)
    b = Chromium(tmp_path / "chromium-profile")
    try:
        b.goto(f"{pf.ui}/v2/runs/flow-run/{run['id']}?tab=Artifacts")
        page = b.wait_text(["grouprank-summary-flowtest", "grouprank-stage-counts-flowtest", "Completed"],
                           timeout=120)
        assert run["flow_run"]["name"] in page
        b.screenshot(shots / "flow_run_artifacts.png")
        href = b.eval("(() => { const a = [...document.querySelectorAll('a')].find("
                      "e => (e.innerText || '').includes('grouprank-summary-flowtest')); return a && a.href })()")
        assert href and "/artifacts/artifact/" in href, href
        b.goto(href)
        stages = _expected_stages()
        text = b.wait_text(["GroupRank run", "stages ran / cached", "cranfield", f"{len(stages)} / 0"] + stages,
                           timeout=90)
        assert "Stages" in text
        shot = b.screenshot(shots / "summary_artifact.png")
        assert shot.stat().st_size > 10_000
        ev = [a for a in run["artifacts"] if a.get("key") == "grouprank-evaluation-flowtest"]
        if "evaluate" in stages:  # the evaluation table: systems x measures, as the UI renders it
            assert ev, "no evaluation artifact"
            b.goto(f"{pf.ui}/v2/artifacts/artifact/{ev[0]['id']}")
            systems = [r["system"] for r in _data(ev[0])]
            text = b.wait_text(["nDCG@10", "R@100"] + systems, timeout=90)
            assert "bm25" in text
            b.screenshot(shots / "evaluation_artifact.png")
        hist = [a for a in run["artifacts"] if a.get("key") == "grouprank-grade-histogram-flowtest"]
        assert hist, "no grade histogram artifact"
        # the PNG embedded as a data: URI renders as an image in the UI
        b.goto(f"{pf.ui}/v2/artifacts/artifact/{hist[0]['id']}")
        b.wait_text(["Grade histogram"], timeout=60)
        w = 0
        for _ in range(30):
            w = b.eval("(() => { const i = [...document.images].find(i => i.src.startsWith('data:image/png'));"
                       " return i ? i.naturalWidth : 0 })()") or 0
            if w:
                break
            time.sleep(1)
        assert w > 100
        b.screenshot(shots / "grade_histogram_artifact.png")
    finally:
        b.close()
    print(f"screenshots in {shots}")


def test_judge_change_reruns_from_judging_on_dask(env):
    """Only the judge configuration changes; the run goes through the Dask task runner (local
    cluster, 2 worker processes) in this test's own process tree, reporting to the same server."""
    # the first run is this test's input: its failure fails this test too (a skip here hid it)
    assert "first" in env["runs"], "the first flow run did not complete (see test_end_to_end_deployment_run)"
    stages = _expected_stages()
    assert "judge" in stages
    cfg = _cfg(env, kind="listwise")
    cfg_path = env["base"] / "judge_changed.json"
    cfg_path.write_text(json.dumps(cfg))
    before = _llm_requests(env["llm"])
    child_env = dict(env["pf"].env)
    child_env["GROUPRANK_TASK_RUNNER"] = "dask"
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "flows", "synthesize", "--config", str(cfg_path), "--json"],
                       cwd=str(REPO), env=child_env, capture_output=True, text=True, timeout=800)
    wall = time.time() - t0
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-6000:])
    assert "LocalCluster" in r.stdout + r.stderr
    summary = json.loads((env["work"] / "run_summary.json").read_text())
    states = {k: v["state"] for k, v in summary["stages"].items()}
    upstream = [s for s in ("load", "mine_queries", "retrieve") if s in stages]
    from grouprank.stage_list import upstream as inputs_from

    def needs_judge(s: str) -> bool:  # judge itself, or a stage fed (transitively) by it
        return s == "judge" or any(needs_judge(u) for u in inputs_from(s))
    downstream = [s for s in stages if needs_judge(s)]
    assert all(states[s] == "cached" for s in upstream), states
    assert all(states[s] == "ran" for s in downstream), states
    for s in downstream:
        ex = summary["stages"][s]["executor"]
        assert ex.startswith("dask-worker ") and f"pid {summary['flow_pid']}" not in ex, (s, ex)
    assert _llm_requests(env["llm"]) - before > 0  # the new judge asked the LLM
    api = {t["name"]: t["state"]["name"] for t in env["pf"].task_runs(summary["flow_run_id"])}
    assert all(api[s] == "Cached" for s in upstream) and all(api[s] == "Completed" for s in downstream), api
    env["runs"]["dask"] = {"wall_s": round(wall, 1)}
