"""Unit tests of the Prefect glue that need no Prefect server: stage registry and wiring, cache
keys, fingerprints, retry classification, task runners, artifact builders, prefect.yaml, flow
parameter schema."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from grouprank.config import JudgeSpec, RunConfig

from grouprank.stage_list import all_stages

from flows import artifacts
from flows.runners import make_task_runner
from flows.tasks import is_transient, llm_slots, retry_condition, run_stage, stage_task

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ resilience
class _State:
    def __init__(self, name, exc):
        self.name, self.exc = name, exc

    def result(self, raise_on_failure=False):
        return self.exc


def test_retry_only_transient_failures():
    from data_schemas import SchemaError
    from grouprank.errors import UserError
    assert is_transient(ConnectionError("reset"))
    assert is_transient(TimeoutError())
    assert is_transient(RuntimeError("HTTP 503"))
    assert is_transient(OSError("disk hiccup"))
    for exc in (UserError("bad config"), SchemaError("bad table"), ValueError("x"), KeyError("k"),
                FileNotFoundError("f")):
        assert not is_transient(exc), exc
    assert retry_condition(None, None, _State("Failed", ConnectionError()))
    assert not retry_condition(None, None, _State("Failed", ValueError()))
    assert not retry_condition(None, None, _State("TimedOut", TimeoutError()))


def test_stage_task_options(tmp_path):
    cfg = RunConfig(work_dir=str(tmp_path))
    st = all_stages()["load"]
    t = stage_task(st, cfg)
    assert t.task_run_name == "load"
    assert t.timeout_seconds == st.timeout_s
    assert t.retries == st.retries
    delays = t.retry_delay_seconds
    assert len(delays) == t.retries and all(b == 2 * a for a, b in zip(delays, delays[1:]))
    assert t.retry_jitter_factor == 0.5 and t.retry_condition_fn is retry_condition
    # one record store (the runner core's <work_dir>/_stages): no Prefect cache, no Prefect result files
    from prefect.cache_policies import NO_CACHE
    assert t.persist_result is False and run_stage.cache_policy is NO_CACHE


def test_llm_slots_capped_by_limit():
    cfg = RunConfig.model_validate({"llm": {"endpoints": [{"name": "a", "max_concurrency": 8}]}})
    assert llm_slots(cfg, 16) == 8
    assert llm_slots(cfg, 3) == 3
    assert llm_slots(RunConfig(), 16) == 1


def test_task_runner_factory(monkeypatch):
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner
    assert isinstance(make_task_runner("thread"), ThreadPoolTaskRunner)
    monkeypatch.setenv("GROUPRANK_TASK_RUNNER", "dask")
    r = make_task_runner()
    assert isinstance(r, DaskTaskRunner)
    assert r.cluster_kwargs["n_workers"] == 2 and r.cluster_kwargs["host"] == "127.0.0.1"
    r = make_task_runner("dask://10.0.0.5:8786")
    assert isinstance(r, DaskTaskRunner) and r.address == "tcp://10.0.0.5:8786"
    with pytest.raises(ValueError):
        make_task_runner("slurm")


# ------------------------------------------------------------------------------ artifacts
def test_artifact_builders(tmp_path):
    from data_schemas import LABELS
    records = [{"stage": "load", "state": "cached", "seconds": 0, "stats": {"documents": 1400, "name": "x"}},
               {"stage": "judge", "state": "ran", "seconds": 3.21, "model_lock_wait_s": 1.5,
                "stats": {"llm_calls": 12, "cost_usd": 0.5, "model_lock_wait_s": 1.5, "work_s": 1.71}}]
    rows = artifacts.stage_rows(records)
    assert rows[0] == {"stage": "load", "state": "cached", "seconds": 0.0, "model_lock_wait_s": None,
                       "numbers": "documents=1,400"}
    assert rows[1]["model_lock_wait_s"] == 1.5  # the wait in its own column, not among the numbers
    assert [set(r) for r in rows] == [set(rows[0])] * 2
    md = artifacts.summary_markdown({"run": "r1", "flow": "synthesize/x", "collection": "cranfield",
                                     "work_dir": "/w", "wall_s": 1.0, "exports": "/w/export"}, rows)
    assert "# GroupRank run `r1`" in md and "| stages ran / cached | 1 / 1 |" in md
    assert "| judge | ran | 3.21 | 1.5 | llm_calls=12, cost_usd=0.5 |" in md
    usage = artifacts.usage_rows({"judge": {"stats": {"llm_calls": 12, "cost_usd": 0.5, "pairs": 9}}})
    assert {(u["metric"], u["value"]) for u in usage} == {("llm_calls", 12), ("cost_usd", 0.5)}
    assert artifacts.artifact_key("summary", "My Run_1") == "grouprank-summary-my-run-1"

    labels = [{"query_id": "q1", "doc_id": f"d{i}", "grade": g, "fused_score": float(i), "fused_rank": i + 1,
               "method": "single", "judge_scores": "{}", "n_judges": 1}
              for i, g in enumerate([0, 0, 1, 3])]
    path = LABELS.write(LABELS.from_records(labels), tmp_path / "labels.parquet")
    g = artifacts.grade_rows(str(path))
    assert g == [{"grade": 0, "count": 2, "share": 0.5}, {"grade": 1, "count": 1, "share": 0.25},
                 {"grade": 3, "count": 1, "share": 0.25}]


def test_histogram_is_embedded_as_data_uri(tmp_path):
    import base64
    png = tmp_path / "h.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    md = artifacts.histogram_markdown(png)
    assert "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode() in md
    assert artifacts.histogram_markdown(tmp_path / "none.png") is None


# ------------------------------------------------------------------------------ deployments
def test_prefect_yaml_deployments():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deps = {d["name"]: d for d in spec["deployments"]}
    assert set(deps) == {"nightly", "judge-only", "train-retriever", "train-reranker", "evaluate", "adapt"}
    assert deps["nightly"]["entrypoint"] == "flows/synthesize.py:synthesize"
    assert deps["nightly"]["schedules"][0]["cron"] == "0 2 * * *"
    for d in deps.values():
        assert d["work_pool"]["name"] == "process"
        path, fn = d["entrypoint"].split(":")
        assert (REPO / path).exists()
        import importlib
        flow = getattr(importlib.import_module(path[:-3].replace("/", ".")), fn)
        assert hasattr(flow, "fn"), d["entrypoint"]  # a Prefect flow object at the entrypoint
        RunConfig.model_validate(d["parameters"]["config"])
    assert deps["judge-only"]["entrypoint"].endswith(":fuse_labels_flow")  # judge, then fuse
    assert "pull" not in spec  # prefect deploy records the repository root as working directory


def test_flow_parameters_are_the_run_config():
    from prefect.utilities.callables import parameter_schema

    from flows.__main__ import flow_names, get_flow
    from flows.synthesize import synthesize
    schema = parameter_schema(synthesize).model_dump()
    assert list(schema["properties"]) == ["config"]
    defs = json.dumps(schema.get("definitions", {}))
    for section in ("DataConfig", "JudgesConfig", "RetrievalConfig", "RerankerConfig"):
        assert section in defs
    params = synthesize.validate_parameters({"config": {"data": {"collection": "cranfield"},
                                                        "judges": {"beta": 0.25}}})
    assert isinstance(params["config"], RunConfig) and params["config"].judges.beta == 0.25
    with pytest.raises(Exception):
        synthesize.validate_parameters({"config": {"judges": {"beta": 7}}})
    with pytest.raises(Exception):
        synthesize.validate_parameters({"config": {"no_such_section": {}}})
    names = [get_flow(n).name for n in flow_names()]
    assert names == flow_names() == ["synthesize"] + [s.cli_name for s in all_stages().values()]


def test_progress_reporter_accepts_both_callback_shapes(monkeypatch):
    import prefect.artifacts as pa

    from flows.tasks import ProgressReporter
    calls = []
    monkeypatch.setattr(pa, "update_progress_artifact",
                        lambda artifact_id, progress, description=None, **kw: calls.append((progress, description)))
    r = ProgressReporter("id-1", "LLM judges", interval=0.05, parts=2)
    r("local", 10, 10)          # judges' runner shape: (judge id, done, total)
    r("llm", 5, 10)
    r.close()
    assert calls and calls[-1][0] == pytest.approx(75.0)
    assert "llm: 5/10" in calls[-1][1]
    n = len(calls)
    r2 = ProgressReporter("id-2", "x", interval=0.05)
    r2(3, 4)                    # LLMClient.map shape: (done, total)
    r2.close()
    assert calls[n:][-1][0] == pytest.approx(75.0)


def test_progress_reporter_sink_and_stage_calls(monkeypatch):
    """Progress objects without a callback of their own (training steps) reach the artifact through
    the sink; where the stage makes its own calls, those set the percentage; it never goes back."""
    import prefect.artifacts as pa

    from flows.tasks import ProgressReporter
    from grouprank.progress import Progress, reporting
    calls = []
    monkeypatch.setattr(pa, "update_progress_artifact",
                        lambda artifact_id, progress, description=None, **kw: calls.append((progress, description)))
    r = ProgressReporter("id-3", "train reranker", interval=0.05, parts=2)
    with reporting(r.sink):
        p = Progress("reranker SFT", 4, unit="steps", every_s=0, callback_every_s=0, bar=False)
        p.update(2)
    r._push()
    assert calls[-1] == (pytest.approx(25.0), "train reranker reranker SFT: 2/4 (1/2)")
    p.update(2)
    p.close()
    q = Progress("outside", 4, every_s=0, callback_every_s=0, bar=False)  # no sink outside the block
    q.update(4)
    r.close()
    assert calls[-1][0] == pytest.approx(50.0) and "outside" not in calls[-1][1]
    r2 = ProgressReporter("id-4", "LLM judges", interval=10, parts=1)
    r2.sink("judge local (local)", 10, 10)   # the local judge's own Progress
    r2("local", 2, 10)                       # the stage's call: it rules the percentage
    assert r2.percent() == pytest.approx(20.0)
    r2("local", 1, 10)
    assert r2.percent() == pytest.approx(20.0)  # never back
    r2.close()


def test_records_from_threads_without_run_context_reach_the_stage_run():
    """A library thread that has no Prefect run context (not a copy of the stage's) logs: the record
    gets the running stage's task run and flow run ids, which Prefect's APILogHandler reads."""
    import logging
    import threading
    import uuid

    from flows import tasks
    f = tasks._ToRun()
    rec = logging.LogRecord("grouprank.x", logging.INFO, __file__, 1, "m", (), None)
    assert f.filter(rec) is False  # no stage running: not sent
    tid, fid = str(uuid.uuid4()), str(uuid.uuid4())
    tasks._RUNS[tid] = fid
    try:
        out = []
        t = threading.Thread(target=lambda: out.append(f.filter(rec)))
        t.start()
        t.join()
        assert out == [True] and rec.flow_run_id == fid and rec.task_run_id == tid
        tasks._RUNS[str(uuid.uuid4())] = fid  # two stages of one flow run: the flow run only
        rec2 = logging.LogRecord("grouprank.x", logging.INFO, __file__, 1, "m", (), None)
        assert f.filter(rec2) is True and rec2.flow_run_id == fid and rec2.task_run_id is None
        tasks._RUNS[str(uuid.uuid4())] = str(uuid.uuid4())  # two flow runs: nobody's
        rec3 = logging.LogRecord("grouprank.x", logging.INFO, __file__, 1, "m", (), None)
        assert f.filter(rec3) is False
    finally:
        tasks._RUNS.clear()
