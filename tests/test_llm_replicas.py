"""Several endpoints for one judge (issue 30, item 3): `llm.endpoints[].replicas`. Requests go to the
replica with the fewest in flight, a replica that dies is taken out by its breaker and its requests go
to the others, and answers land in one cache keyed without any replica URL. Every server is a real
OpenAI-compatible HTTP server on 127.0.0.1 (tests.support.fake_openai_server)."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from grouprank.config import JudgeSpec, LLMEndpoint, RunConfig
from grouprank.errors import UserError
from grouprank.llm import LLMClient, LLMRequest, request_hash
from grouprank.llm.guard import EndpointUnavailable
from tests.support.fake_openai_server import prompt_hash, start_local_server
from tests.test_reliability_endpoint import CANARY, REPO, feed, refused_port, stage_inputs

pytestmark = pytest.mark.timeout(180)


def _reqs(n: int, tag: str = "t") -> list[LLMRequest]:
    return [LLMRequest(messages=[{"role": "user", "content": f"{tag} prompt {i}"}], template_version="t@1", tag=tag)
            for i in range(n)]


def _ep(urls, **kw) -> LLMEndpoint:
    kw = {"max_concurrency": 4, "backoff_base_s": 0.05, "backoff_max_s": 0.2, "timeout_s": 10, "breaker_failures": 3,
          **kw}
    return LLMEndpoint(name="judge-model", replicas=list(urls), model="m", **kw)


def test_replicas_config_keys_and_redaction(caplog):
    caplog.set_level(logging.WARNING)
    ep = LLMEndpoint(name="x", replicas=["http://user:pw@127.0.0.1:1/v1?api_key=sk-CANARYreplica0123456789abcd",
                                         " http://127.0.0.1:2/v1 "])
    assert ep.replicas == ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]
    assert "pw" not in caplog.text and "CANARY" not in caplog.text and "replicas[0]" in caplog.text
    with pytest.raises(ValueError, match="not both base_url and replicas"):
        LLMEndpoint(name="x", base_url="http://127.0.0.1:1/v1", replicas=["http://127.0.0.1:2/v1"])
    with pytest.raises(ValueError, match="listed twice"):
        LLMEndpoint(name="x", replicas=["http://127.0.0.1:1/v1", "http://127.0.0.1:1/v1/"])
    with pytest.raises(ValueError, match="one base URL or more"):
        LLMEndpoint(name="x", replicas=[])
    # the cache key names the endpoint, not a replica: another replica set finds the same answers
    r = _reqs(1)[0]
    a = request_hash(r, LLMEndpoint(name="x", replicas=["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]))
    assert a == request_hash(r, LLMEndpoint(name="x", replicas=["http://10.0.0.9:8000/v1"]))
    assert a != request_hash(r, LLMEndpoint(name="y", replicas=["http://127.0.0.1:1/v1"]))
    assert a != request_hash(r, LLMEndpoint(name="x", base_url="http://127.0.0.1:1/v1"))


def test_the_replica_with_fewest_in_flight_gets_the_requests():
    """A slow replica (400 ms) and a fast one (20 ms), 4 in flight each: least-in-flight sends most
    requests to the fast one (round robin would split them evenly); both serve some."""
    with start_local_server("echo", latency_ms=400) as slow, start_local_server("echo", latency_ms=20) as fast:
        client = LLMClient(_ep([slow.base_url, fast.base_url]))
        res = client.map(_reqs(80))
        s, f = slow.stats(detail=False)["ok"], fast.stats(detail=False)["ok"]
    assert all(x.ok for x in res) and s + f == 80
    assert 0 < s and f > 3 * s, (s, f)
    assert [u["answers"] for u in client.usage()["replicas"]] == [s, f]


def test_a_replica_killed_mid_run_loses_and_duplicates_nothing(tmp_path):
    """Replica A answers 15 requests, then holds the rest; it is killed (SIGKILL) with requests in
    flight. Every request is answered exactly once over both servers, A's breaker takes it out, and
    the answers are in the one cache: a rerun on another replica set sends nothing."""
    cache = tmp_path / "c.sqlite"
    n = 120
    with start_local_server("echo", latency_ms=10) as a, start_local_server("echo", latency_ms=10) as b:
        a.control(hold_after_ok=15)
        client = LLMClient(_ep([a.base_url, b.base_url]), cache_path=cache)
        out: dict = {}
        t = threading.Thread(target=lambda: out.setdefault("res", client.map(_reqs(n))))
        t.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = a.stats(detail=False)
            if st["ok"] >= 15 and st["in_flight"] >= 2:
                break
            time.sleep(0.02)
        a_stats = a.stats()  # held: A answers nothing more from here on
        a.proc.kill()
        a.proc.wait()
        t.join(60)
        assert not t.is_alive()
        b_stats = b.stats()
        res = out["res"]
        assert all(r.ok for r in res), [r.error for r in res if not r.ok][:3]   # 0 pairs lost
        assert a_stats["in_flight"] >= 2                                         # killed with requests held
        per = {prompt_hash(r.messages): 0 for r in _reqs(n)}
        for st in (a_stats, b_stats):
            for h, c in st["per_prompt"].items():
                per[h] += c["ok"]
        assert sorted(set(per.values())) == [1], per                           # 0 answered twice (or never)
        assert a_stats["ok"] == 15 and b_stats["ok"] == n - 15
        usage = client.usage()
        assert usage["replicas"][0]["out"] and "consecutive connection failures" in usage["replicas"][0]["out"]
        assert usage["replicas"][1]["out"] is None and usage["ok"] == n
        client.close()
        # one cache, no URL in its keys: the same endpoint on replica B alone (or any other set) pays nothing
        b.reset()
        again = LLMClient(_ep([b.base_url]), cache_path=cache)
        assert all(r.ok and r.cached for r in again.map(_reqs(n)))
        assert b.stats(detail=False)["requests"] == 0
        again.close()


def test_preflight_takes_out_an_unreachable_replica_and_fails_when_none_is_left():
    dead = f"http://127.0.0.1:{refused_port()}/v1"
    with start_local_server("echo") as live:
        client = LLMClient(_ep([dead, live.base_url]))
        assert all(r.ok for r in client.map(_reqs(10)))
        assert "preflight failed" in client.usage()["replicas"][0]["out"]
        assert live.stats(detail=False)["ok"] == 10
    client = LLMClient(_ep([dead, f"http://127.0.0.1:{refused_port()}/v1"]))
    with pytest.raises(EndpointUnavailable, match="no replica can be reached"):
        client.map(_reqs(3))
    with pytest.raises(UserError, match="no base_url"):
        LLMClient(LLMEndpoint(name="none"))


def _warm(srv) -> None:
    import urllib.error
    import urllib.request
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "warm up"}]}).encode()
    req = urllib.request.Request(srv.base_url + "/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=120).read()
    except urllib.error.HTTPError:
        pass  # not a judge prompt: HTTP 500, after the imports
    srv.reset()


@pytest.mark.timeout(300)
def test_judge_stage_on_two_replicas_one_killed(tmp_path):
    """The judge stage (pointwise, 100 pairs) through the CLI on an endpoint with two replicas; one is
    killed mid-run: the stage succeeds with every pair judged, and each pair's prompt was answered by
    exactly one server."""
    inputs = stage_inputs(tmp_path)
    resp = "tests.support.judge_responder:respond"
    with start_local_server(resp, latency_ms=30) as a, start_local_server(resp, latency_ms=30) as b:
        for srv in (a, b):  # the responder's first call imports the prompt templates: not under the judge's timeouts
            _warm(srv)
        a.control(hold_after_ok=20)
        cfg = RunConfig(work_dir=str(tmp_path / "work"),
                        llm={"endpoints": [_ep([a.base_url, b.base_url], timeout_s=60)]},
                        judges={"judges": [JudgeSpec(id="pw", kind="pointwise", endpoint="judge-model")]})
        conf = tmp_path / "cfg.json"
        conf.write_text(cfg.model_dump_json())
        env = {"OPENAI_API_KEY": CANARY, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        import os
        proc = subprocess.Popen([sys.executable, "-m", "grouprank.cli", "judge", "--config", str(conf), *feed(inputs)],
                                cwd=REPO, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.monotonic() + 150  # the CLI's start-up is slow on a loaded machine
        while time.monotonic() < deadline and proc.poll() is None:
            st = a.stats(detail=False)
            if st["ok"] >= 20 and st["in_flight"] >= 1:
                break
            time.sleep(0.05)
        a_stats = a.stats()
        a.proc.kill()
        a.proc.wait()
        out, err = proc.communicate(timeout=120)
        b_stats = b.stats()
    assert proc.returncode == 0, err[-3000:]
    assert a_stats["in_flight"] >= 1 and a_stats["ok"] == 20, (a_stats["ok"], a_stats["in_flight"], err[-2000:])
    rows = pq.read_table(json.loads(out)["outputs"]["judgments"]).to_pylist()
    assert len(rows) == 100 and len({(r["query_id"], r["doc_id"]) for r in rows}) == 100
    assert json.loads(out)["stats"]["failed"] == 0
    answered: dict[str, int] = {}
    for st in (a_stats, b_stats):
        for h, c in st["per_prompt"].items():
            answered[h] = answered.get(h, 0) + c["ok"]
    assert len(answered) == 100 and set(answered.values()) == {1}, answered
    assert "taken out" in err and CANARY not in err + out and "Traceback" not in err
