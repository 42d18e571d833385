"""A dead or failing endpoint stops a stage early and loudly (issue 18, item 2): the preflight
request, the circuit breaker, the judge stage's failure bound and `fuse-labels` on zero labels.
Every server here is on 127.0.0.1."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from data_schemas import CANDIDATES, DOCUMENTS, QUERIES
from grouprank.config import JudgeSpec, LLMEndpoint, RunConfig
from grouprank.llm import LLMClient, LLMRequest

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[1]
CANARY = "sk-CANARYreliability0123456789abcdef"


def refused_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def stage_inputs(tmp_path: Path, n_queries: int = 10, per_query: int = 10) -> dict[str, str]:
    docs = [{"doc_id": f"d{i}", "title": None, "text": f"document {i} about topic {i % 7}", "collection": "t"}
            for i in range(n_queries * per_query)]
    qs = [{"query_id": f"q{j}", "text": f"topic {j}", "collection": "t", "split": "test", "source": "existing",
           "decision": "kept"} for j in range(n_queries)]
    cands = [{"query_id": f"q{j}", "doc_id": f"d{j * per_query + i}", "rank": i + 1, "fused_score": 1.0 / (i + 1),
              "bm25_score": None, "bm25_rank": None, "dense_score": None, "dense_rank": None, "fusion": "minmax",
              "pool": "top"} for j in range(n_queries) for i in range(per_query)]
    DOCUMENTS.write(DOCUMENTS.from_records(docs), tmp_path / "docs.parquet")
    QUERIES.write(QUERIES.from_records(qs), tmp_path / "queries.parquet")
    CANDIDATES.write(CANDIDATES.from_records(cands), tmp_path / "cand.parquet")
    return {"candidates": str(tmp_path / "cand.parquet"), "documents": str(tmp_path / "docs.parquet"),
            "mined_queries": str(tmp_path / "queries.parquet")}


def write_cfg(tmp_path: Path, base_url: str, **ep) -> str:
    ep = {"max_retries": 5, "backoff_base_s": 0.2, "backoff_max_s": 1.0, "timeout_s": 5, **ep}
    cfg = RunConfig(work_dir=str(tmp_path / "work"),
                    llm={"endpoints": [LLMEndpoint(name="deadend", base_url=base_url, model="m", **ep)]},
                    judges={"judges": [JudgeSpec(id="pw", kind="pointwise", endpoint="deadend")]})
    p = tmp_path / "cfg.json"
    p.write_text(cfg.model_dump_json())
    return str(p)


def cli(args: list[str], timeout: float = 60) -> tuple[int, str, str, float]:
    env = {**os.environ, "OPENAI_API_KEY": CANARY, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "grouprank.cli", *args], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr, time.monotonic() - t0


def feed(inputs: dict[str, str]) -> list[str]:
    return [a for k, v in inputs.items() for a in (f"--{k.replace('_', '-')}", v)]


def test_judge_stage_fails_fast_on_refused_connections(tmp_path):
    """100 pairs against a port that refuses connections: non-zero exit within 10 s (process start
    included), one clear line naming the endpoint and the reason, no traceback, no key."""
    port = refused_port()
    conf = write_cfg(tmp_path, f"http://127.0.0.1:{port}/v1")
    rc, out, err, wall = cli(["judge", "--config", conf, *feed(stage_inputs(tmp_path))])
    assert rc != 0, (out, err)
    assert wall < 10, wall
    assert "'deadend'" in err and f"127.0.0.1:{port}" in err and "unreachable" in err, err
    assert "Traceback" not in err and CANARY not in err + out
    assert not (tmp_path / "work" / "judge" / "judgments.parquet").exists()


def test_circuit_breaker_stops_after_consecutive_connection_failures(tmp_path):
    """Preflight off: without the breaker 100 requests x 6 attempts would be sent; with it the client
    stops after `breaker_failures` consecutive connection failures and says so."""
    from grouprank.llm.client import EndpointUnavailable
    ep = LLMEndpoint(name="deadend", base_url=f"http://127.0.0.1:{refused_port()}/v1", model="m", max_retries=5,
                     backoff_base_s=0.01, backoff_max_s=0.02, preflight=False, breaker_failures=10,
                     max_concurrency=4)
    client = LLMClient(ep, None, api_key=CANARY)
    reqs = [LLMRequest(messages=[{"role": "user", "content": f"q{i}"}], template_version="t@1") for i in range(100)]
    t0 = time.monotonic()
    with pytest.raises(EndpointUnavailable) as ei:
        client.map(reqs)
    msg = str(ei.value)
    assert "'deadend'" in msg and "consecutive connection failures" in msg and "0 of 100" in msg, msg
    assert CANARY not in msg
    calls = client.usage()["calls"]
    assert 10 <= calls <= 10 + 2 * 4 * 2, calls  # the streak, plus what was already in flight
    assert time.monotonic() - t0 < 10


class _AuthServer(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"error": {"message": f"bad key {self.headers.get('Authorization')}"}}).encode())

    def log_message(self, *a):
        pass


def test_preflight_names_a_rejected_key_without_showing_it(tmp_path):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _AuthServer)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        from grouprank.llm.client import EndpointUnavailable
        ep = LLMEndpoint(name="guarded", base_url=f"http://127.0.0.1:{srv.server_address[1]}/v1", model="m",
                         api_key_env="MY_LLM_KEY")
        client = LLMClient(ep, None, api_key=CANARY)
        with pytest.raises(EndpointUnavailable) as ei:
            client.complete(LLMRequest(messages=[{"role": "user", "content": "x"}], template_version="t@1"))
        msg = str(ei.value)
        assert "'guarded'" in msg and "HTTP 401" in msg and "$MY_LLM_KEY" in msg and CANARY not in msg
    finally:
        srv.shutdown()
        srv.server_close()


def test_failed_pairs_fail_the_stage_and_zero_labels_fail_fuse(tmp_path):
    """HTTP 500 on every completion: the judge stage exits non-zero with a per-judge summary unless
    judges.max_failed_fraction allows it; fusing those judgments (0 labels) is an error too. Answers
    that are merely unparsable (the echo responder) do not fail the judge stage."""
    from tests.support.fake_openai_server import start_local_server
    inputs = stage_inputs(tmp_path, n_queries=2, per_query=5)
    with start_local_server("echo", faults={"500": 1.0}) as srv:
        conf = write_cfg(tmp_path, srv.base_url)
        cfgd = json.loads(Path(conf).read_text())
        cfgd["llm"]["endpoints"][0].update(max_retries=1, backoff_base_s=0.01, backoff_max_s=0.01)
        Path(conf).write_text(json.dumps(cfgd))
        rc, out, err, _ = cli(["judge", "--config", conf, *feed(inputs)])
        assert rc != 0 and "judge 'pw': 10 of 10 pairs failed" in err and "http_500" in err, err
        assert "Rerun the same command to resume" in err, err  # the pair failed after its retries: say how to go on
        rc, out, err, _ = cli(["judge", "--config", conf, *feed(inputs), "--set", "judges.max_failed_fraction=1"])
        assert rc == 0, err
        judgments = json.loads(out)["outputs"]["judgments"]
        rc, out, err, _ = cli(["fuse-labels", "--config", conf, "--judgments", judgments])
        assert rc != 0 and "0 labels" in err, (out, err)
    with start_local_server("echo") as srv:  # answers arrive, none parses: the judge's data, not an outage
        conf = write_cfg(tmp_path, srv.base_url)
        rc, out, err, _ = cli(["judge", "--config", conf, *feed(inputs), "--refresh"])
        assert rc == 0, err
        assert json.loads(out)["stats"]["failed"] == 10


# --------------------------------------------------------------------------- a hung endpoint (issue 27, item 5)

def _hung_server():
    from tests.support.fake_openai_server import start_local_server
    return start_local_server("tests.support.judge_responder:respond", faults={"hang": 1.0}, hang_s=3600.0)


def test_hung_endpoint_stops_the_judge_stage_through_the_breaker(tmp_path):
    """Every request hangs. Timeouts count toward the breaker, so 100 pairs with 1 s attempts and 5
    retries each stop after `breaker_failures` timeouts (a few seconds), not after 100 x 6 timeouts
    / 4 in flight (~150 s, what 8a543dc spent); the summary names the endpoint and the reason."""
    with _hung_server() as srv:
        conf = write_cfg(tmp_path, srv.base_url, breaker_failures=6, max_concurrency=4, timeout_s=1.0)
        rc, out, err, wall = cli(["judge", "--config", conf, *feed(stage_inputs(tmp_path))], timeout=100)
    assert rc != 0, (out, err)
    assert wall < 30, (wall, err[-2000:])
    assert "'deadend'" in err and "consecutive timeouts" in err and "rerun" in err, err[-2000:]
    assert "Traceback" not in err and CANARY not in err + out
    assert not (tmp_path / "work" / "judge" / "judgments.parquet").exists()


def test_hung_endpoint_stops_within_the_time_budget(tmp_path):
    """Breaker off and a 60 s attempt timeout: `time_budget_s` alone bounds the stage. The requests in
    flight are cut when the 3 s budget is spent and nothing more is sent."""
    with _hung_server() as srv:
        conf = write_cfg(tmp_path, srv.base_url, breaker_failures=0, max_concurrency=4, timeout_s=60.0,
                         time_budget_s=3.0)
        rc, out, err, wall = cli(["judge", "--config", conf, *feed(stage_inputs(tmp_path))], timeout=100)
        received = srv.stats(detail=False)["requests"]
    assert rc != 0, (out, err)
    assert wall < 25, (wall, err[-2000:])
    assert "'deadend'" in err and "time budget of 3s" in err, err[-2000:]
    assert received <= 8, received  # the 4 in flight (+ their one retry), no more


def test_retries_are_reported_with_a_worst_case_bound(monkeypatch, caplog):
    """While nothing comes back a rate-based ETA says nothing; the client logs its retries by kind
    and the worst case for the requests still open (timeouts x attempts plus backoff, per wave of
    `max_concurrency`), bounded by the time budget and the breaker."""
    import logging

    from grouprank.llm.client import EndpointUnavailable
    monkeypatch.setenv("GROUPRANK_PROGRESS_EVERY_S", "0")
    caplog.set_level(logging.INFO, logger="grouprank.llm")
    with _hung_server() as srv:
        ep = LLMEndpoint(name="slow", base_url=srv.base_url, model="m", max_retries=3, timeout_s=0.5,
                         backoff_base_s=0.01, backoff_max_s=0.02, breaker_failures=8, max_concurrency=2,
                         time_budget_s=6.0)
        client = LLMClient(ep, None, api_key=CANARY)
        reqs = [LLMRequest(messages=[{"role": "user", "content": f"q{i}"}], template_version="t@1") for i in range(6)]
        with pytest.raises(EndpointUnavailable, match="'slow'"):
            client.map(reqs)
    lines = [r.getMessage() for r in caplog.records if "retrying (" in r.getMessage()]
    assert lines, [r.getMessage() for r in caplog.records][-5:]
    first = lines[0]
    assert "'slow'" in first and "timeout x" in first and "requests still open" in first, first
    # 6 open, 2 at a time: 3 waves x 4 attempts x (0.5 s + 0.02 s backoff cap) = 6.24 s
    assert "at most 6s for the 6 requests still open" in first or "at most 6s for the 5 requests" in first, first
    assert "time budget" in first and "more consecutive failures" in first, first


def test_retry_bound_counts_the_slots_of_every_live_replica(monkeypatch, caplog):
    """Two replicas of concurrency 2 take 4 requests a wave: 8 open requests are 2 waves, not 4."""
    import logging

    from grouprank.llm.guard import EndpointGuard
    from grouprank.llm.replicas import ReplicaSet
    monkeypatch.setenv("GROUPRANK_PROGRESS_EVERY_S", "0")
    caplog.set_level(logging.INFO, logger="grouprank.llm")
    ep = LLMEndpoint(name="two", replicas=["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"], model="m",
                     max_retries=0, timeout_s=10.0, backoff_max_s=0.0, max_concurrency=2)
    guard = EndpointGuard(ep, "two")
    reps = ReplicaSet(ep, guard)
    assert reps.slots() == 4
    guard.pending = 8
    guard.note_retry("timeout", None, reps.slots())
    guard.note_retry("timeout", None)  # one endpoint's slots: twice the waves
    lines = [r.getMessage() for r in caplog.records if "retrying (" in r.getMessage()]
    assert "at most 20s for the 8 requests" in lines[0] and "at most 40s for the 8 requests" in lines[1], lines
    reps.items[1].guard.open("gone")  # a replica out: its slots no longer count
    assert reps.slots() == 2
