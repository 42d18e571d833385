"""Crash safety and key hygiene of the LLM client layer, against the real local HTTP server.

- SIGKILL mid-run: a child process judging a batch is killed while requests are in flight; the
  restarted child sends only the unanswered prompts and finishes with the same answers; the
  server's per-prompt counter shows no prompt answered OK twice.
- key canary: a recognisable fake key travels to the server but appears nowhere in the cache
  file, captured logs, stdout/stderr, results, usage, error messages or exception texts.
"""
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

from grouprank.config import LLMEndpoint
from grouprank.errors import UserError
from grouprank.llm import LLMClient, LLMRequest, ParseError, extract_json, extract_tag
from tests.support.fake_openai_server import start_local_server
from tests.support.responders import labels as labels_responder

REPO = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import json, sys
    from grouprank.config import LLMEndpoint
    from grouprank.llm import LLMClient, LLMRequest, json_validator

    base_url, cache, out, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    ep = LLMEndpoint(name="crash", base_url=base_url, max_concurrency=6, timeout_s=60.0,
                     max_retries=3, backoff_base_s=0.01, backoff_max_s=0.05)
    reqs = [LLMRequest(messages=[{"role": "user", "content":
                                  f"query {i}\\n[1] doc a{i}\\n[2] doc b{i}\\n[3] doc c{i}"}],
                       template_version="test.crash@1", validate=json_validator(tag="answer"),
                       meta=i) for i in range(n)]
    client = LLMClient(ep, cache, stage="test", judge_id="crash")
    res = client.map(reqs)
    with open(out, "w") as f:
        json.dump({"results": [{"i": r.meta, "status": r.status, "parsed": r.parsed, "cached": r.cached,
                                "messages": q.messages, "error": r.error} for q, r in zip(reqs, res)],
                   "usage": client.usage()}, f)
""")


def _wait(pred, timeout=30.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _rows(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0


def test_sigkill_mid_run_then_resume(tmp_path):
    n, first = 50, 15
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    cache, out = tmp_path / "cache.sqlite", tmp_path / "out.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with start_local_server("labels", latency_ms=20) as srv:
        # after `first` OK answers the server holds every further request (in flight, unanswered)
        srv.control(hold_after_ok=first)
        child = subprocess.Popen([sys.executable, str(script), srv.base_url, str(cache), str(out), str(n)],
                                 env=env)
        try:
            _wait(lambda: srv.stats(detail=False)["ok"] == first and srv.stats(detail=False)["in_flight"] >= 1,
                  what="first answers + requests in flight")
            _wait(lambda: _rows(cache) == first, what="answers committed")  # each committed on arrival
            held = srv.stats(detail=False)["in_flight"]
            os.kill(child.pid, signal.SIGKILL)
            assert child.wait(30) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert not out.exists() and held >= 1
        srv.control(hold_after_ok=None)
        _wait(lambda: srv.stats(detail=False)["in_flight"] == 0, what="held requests dropped")
        assert srv.stats(detail=False)["ok"] == first  # the held ones were never answered

        rerun = subprocess.run([sys.executable, str(script), srv.base_url, str(cache), str(out), str(n)],
                               env=env, timeout=120)
        assert rerun.returncode == 0
        st = srv.stats()
    data = json.loads(out.read_text())
    res = data["results"]
    assert len(res) == n and all(r["status"] == "ok" for r in res)
    assert sum(r["cached"] for r in res) == first  # the restart re-sent only the unanswered prompts
    assert data["usage"]["calls"] == n - first
    for r in res:  # same answers as an uninterrupted run (the responder is deterministic)
        assert r["parsed"] == json.loads(extract_tag(labels_responder(r["messages"], {}), "answer"))
    assert st["prompts"] == n
    assert all(v["ok"] == 1 for v in st["per_prompt"].values())  # no prompt answered OK twice
    assert st["requests"] == n + held


def _validator(text):
    obj = extract_json(extract_tag(text, "answer"), expect=dict)
    if not obj:
        raise ParseError("empty")
    return obj


def _reqs(n, run):
    return [LLMRequest(messages=[{"role": "user", "content": f"{run} query {i}: [1] a [2] b"}],
                       template_version="test.canary@1", validate=_validator, tag="canary", meta=i)
            for i in range(n)]


def test_api_key_canary(tmp_path, caplog, capfd, monkeypatch):
    canary = f"sk-CANARY-{uuid.uuid4().hex}"
    monkeypatch.setenv("GROUPRANK_TEST_CANARY_KEY", canary)
    caplog.set_level(logging.DEBUG)  # everything: grouprank, openai, httpx, aiohttp, asyncio
    for name in ("openai", "httpx", "httpcore", "aiohttp", "grouprank"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    server_log = tmp_path / "server.log"
    cache = tmp_path / "cache.sqlite"
    exc_texts = []
    # the server's 401_echo fault answers with the Authorization header in the error body
    with start_local_server("labels", seed=2, log_path=server_log,
                            faults={"401_echo": 0.25, "500": 0.1, "malformed": 0.1, "truncated": 0.1}) as srv:
        ep = LLMEndpoint(name="canary", base_url=srv.base_url, api_key_env="GROUPRANK_TEST_CANARY_KEY",
                         max_concurrency=8, timeout_s=5, max_retries=3, backoff_base_s=0.01,
                         backoff_max_s=0.02)
        client = LLMClient(ep, cache, stage="judges", judge_id="canary")
        res = client.map(_reqs(40, "env"))
        # an explicit key (e.g. a Prefect Secret's value) is treated the same way
        client2 = LLMClient(ep.model_copy(update={"api_key_env": "GROUPRANK_UNSET_VAR"}), cache,
                            api_key=canary)
        res += client2.map(_reqs(20, "explicit"))
        st = srv.stats()
        try:
            LLMClient(ep.model_copy(update={"base_url": None}), None, api_key=canary)
        except UserError as e:
            exc_texts.append(repr(e) + str(e))
    # an endpoint that echoes the key back inside a 200 answer does not plant it in the cache
    with start_local_server("echo", faults={"auth_echo": 1.0}) as echo_srv:
        c3 = LLMClient(LLMEndpoint(name="echo", base_url=echo_srv.base_url), cache, api_key=canary)
        r3 = c3.map([LLMRequest(messages=[{"role": "user", "content": "what is my key?"}],
                                template_version="test.canary@1")])[0]
        c3.close()
    assert r3.ok and r3.text == "echo: Bearer ***"
    res.append(r3)
    assert st["auth_requests"] == st["requests"] > 0  # the key did travel in the header
    echoed = [r for r in res if not r.ok and "http_401" in (r.error or "")]
    assert echoed and all("***" in r.error for r in echoed)  # the echoed key was scrubbed
    assert any(r.ok for r in res)
    usage = json.dumps([client.usage(), client2.usage()])
    client.close()
    client2.close()
    out, err = capfd.readouterr()
    blobs = {
        "logs": caplog.text + "".join(repr(r.__dict__) for r in caplog.records),
        "stdout": out, "stderr": err, "results": repr(res) + json.dumps([r.__dict__ for r in res], default=str),
        "usage": usage, "client_repr": repr(client) + repr(client2) + repr(vars(client)) + repr(vars(client2)), "exceptions": "".join(exc_texts),
        "server_log": server_log.read_text(errors="replace") if server_log.exists() else "",
    }
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "cache.sqlite" for p in files)
    for p in files:  # the cache and its -wal/-shm files, the server log
        blobs[str(p)] = p.read_bytes().decode("latin-1")
    secret = canary.split("sk-CANARY-")[1]
    leaks = [name for name, blob in blobs.items() if secret in blob]
    assert not leaks, f"API key found in {leaks}"
    assert caplog.text  # logging really was captured
