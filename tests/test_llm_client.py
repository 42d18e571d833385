"""LLMClient against the real local OpenAI-compatible HTTP server (subprocess on 127.0.0.1).

No mocked HTTP: every request goes over a socket to `tests.support.fake_openai_server`.
"""
import asyncio
import json
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from grouprank.config import LLMEndpoint
from grouprank.llm import (LLMClient, LLMRequest, ParseError, estimate, extract_json, extract_tag,
                           usage_report)
from tests.support.fake_openai_server import FAULT_KINDS, prompt_hash, start_local_server
from tests.support.responders import labels as labels_responder


def endpoint(base_url, **kw):
    opts = dict(name="test", base_url=base_url, model="local", max_concurrency=16, timeout_s=0.6,
                max_retries=6, backoff_base_s=0.01, backoff_max_s=0.05, retry_after_max_s=1.0)
    opts.update(kw)
    return LLMEndpoint(**opts)


def group_validator(n_docs):
    want = {f"[{i}]" for i in range(1, n_docs + 1)}

    def validate(text):
        body = extract_tag(text, "answer")
        if body is None:
            raise ParseError("no complete <answer> tag")
        obj = extract_json(body, expect=dict)
        if set(obj) != want:
            raise ParseError(f"labels {sorted(set(obj) ^ want)} missing or unknown")
        return {k: int(v) for k, v in obj.items()}

    return validate


def group_requests(n, run="r", n_docs=4, tag="groupwise"):
    reqs = []
    for i in range(n):
        docs = "\n".join(f"[{j}] <document>passage {j} of query {i}</document>" for j in range(1, n_docs + 1))
        reqs.append(LLMRequest(
            messages=[{"role": "system", "content": "Score each document 0-10."},
                      {"role": "user", "content": f"Query {i} ({run})\n{docs}"}],
            template_version="test.groupwise@1", validate=group_validator(n_docs), tag=tag, meta=i))
    return reqs


def expected_answer(req):
    return group_validator(4)(labels_responder(req.messages, {}))


def test_basic_roundtrip_usage_and_order(tmp_path):
    with start_local_server("labels", latency_ms=5) as srv:
        ep = endpoint(srv.base_url, price_prompt_per_mtok=2.0, price_completion_per_mtok=8.0)
        client = LLMClient(ep, tmp_path / "c.sqlite", stage="judges", judge_id="gw")
        reqs = group_requests(30)
        seen = []
        res = client.map(reqs, progress=lambda done, total: seen.append((done, total)))
        assert [r.meta for r in res] == list(range(30))
        assert all(r.ok and r.attempts == 1 and not r.cached for r in res)
        assert [r.parsed for r in res] == [expected_answer(q) for q in reqs]
        assert seen[-1] == (30, 30)
        u = client.usage()
        assert (u["requests"], u["ok"], u["calls"], u["failed"]) == (30, 30, 30, 0)
        assert u["prompt_tokens"] == sum(r.prompt_tokens for r in res) > 0
        expect_cost = (u["prompt_tokens"] * 2.0 + u["completion_tokens"] * 8.0) / 1e6
        assert u["cost_usd"] == pytest.approx(expect_cost, abs=1e-6)
        assert u["per_tag"]["groupwise"]["ok"] == 30 and u["stage"] == "judges" and u["judge_id"] == "gw"
        rep = usage_report()["judges/gw"]
        assert rep["ok"] >= 30 and rep["cost_usd"] >= u["cost_usd"]
        st = srv.stats()
        assert st["requests"] == 30 and st["ok"] == 30 and st["max_in_flight"] <= 16
        client.close()


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_retries_on_each_fault_kind(tmp_path, kind):
    """Half the answers carry the fault: each kind is retried (transport kinds with backoff, bad
    answers once), and every request ends ok or failed with a reason."""
    with start_local_server("labels", faults={kind: 0.5}, seed=3, retry_after_s=0.05) as srv:
        client = LLMClient(endpoint(srv.base_url), tmp_path / "c.sqlite")
        reqs = group_requests(24, run=kind)
        res = client.map(reqs)
        st = srv.stats()
        u = client.usage()
        assert st["faults"].get(kind, 0) > 0
        assert len(res) == len(reqs)
        for q, r in zip(reqs, res):
            assert r.status in ("ok", "failed")
            if r.ok:
                assert r.parsed == expected_answer(q)
            else:
                assert r.error
        if kind in ("429", "500", "hang", "malformed"):
            assert u["retries"] > 0
            err = {"429": "http_429", "500": "http_500", "hang": "timeout", "malformed": "malformed_response"}[kind]
            assert u["errors"].get(err, 0) == st["faults"][kind]
            assert all(r.ok for r in res)  # 6 retries at p=0.5: none should run out
            assert u["calls"] == st["requests"] == sum(r.attempts for r in res)
        else:  # truncated / wrong_labels: caught by validation, asked once more, then failed
            assert u["parse_retries"] > 0
            failed = [r for r in res if not r.ok]
            assert all(r.error.startswith("parse:") and r.attempts == 2 for r in failed)
        if kind == "429":  # Retry-After (retry-after-ms: 50) is honoured: never less than it says
            assert u["backoff_s"] >= 0.05 * u["errors"]["http_429"] - 1e-6
        # none answered OK twice
        assert all(v["ok"] <= 1 for v in st["per_prompt"].values())
        client.close()


def test_twenty_percent_faults_of_every_kind(tmp_path):
    """20% faults spread over all six kinds: every request ends exactly once, ok or failed with a
    reason; nothing is answered OK twice; the cache holds exactly the ok answers."""
    with start_local_server("labels", fault_rate=0.2, seed=1, latency_ms=2) as srv:
        client = LLMClient(endpoint(srv.base_url, max_concurrency=32), tmp_path / "c.sqlite")
        reqs = group_requests(240, run="mix")
        reqs += group_requests(10, run="mix")  # duplicates of the first ten: sent once
        res = client.map(reqs)
        st = srv.stats()
        assert set(st["faults"]) >= set(FAULT_KINDS)
        assert len(res) == 250 and [r.meta for r in res] == list(range(240)) + list(range(10))
        for q, r in zip(reqs, res):
            assert r.status in ("ok", "failed")
            assert r.request_hash == client.request_hash(q)
            if r.ok:
                assert r.parsed == expected_answer(q)
            else:
                assert r.error and r.parsed is None
        for a, b in zip(res[:10], res[240:]):
            assert (a.status, a.text) == (b.status, b.text)
        assert st["prompts"] == 240  # duplicates never went over the wire
        assert st["prompts_ok_more_than_once"] == 0
        ok_hashes = {r.request_hash for r in res[:240] if r.ok}
        assert client.cache.keys() == ok_hashes
        assert sum(v["ok"] for v in st["per_prompt"].values()) == len(ok_hashes)
        assert sum(r.ok for r in res) >= 230  # nearly all recover
        client.close()


def test_cache_rerun_sends_nothing_and_failures_are_not_cached(tmp_path):
    cache = tmp_path / "c.sqlite"
    with start_local_server("labels") as srv:
        reqs = group_requests(20, run="cache")
        srv.control(fault_rates={"500": 1.0})
        c1 = LLMClient(endpoint(srv.base_url, max_retries=1), cache)
        res1 = c1.map(reqs)
        assert all(not r.ok and "http_500" in r.error for r in res1)
        assert len(c1.cache) == 0
        srv.control(fault_rates={})
        srv.reset()
        c2 = LLMClient(endpoint(srv.base_url), cache)  # a new client: the failed ones are asked again
        res2 = c2.map(reqs)
        assert all(r.ok and not r.cached for r in res2) and srv.stats()["requests"] == 20
        srv.reset()
        c3 = LLMClient(endpoint(srv.base_url), cache)
        res3 = c3.map(reqs)
        assert srv.stats()["requests"] == 0
        assert all(r.cached and r.attempts == 0 for r in res3)
        assert [r.parsed for r in res3] == [r.parsed for r in res2]
        assert c3.usage()["cached_calls"] == 20 and c3.usage()["calls"] == 0
        # a change of template version is a different prompt: asked again
        srv.reset()
        other = group_requests(1, run="cache")[0]
        other.template_version = "test.groupwise@2"
        assert c3.map([other])[0].ok and srv.stats()["requests"] == 1
        for c in (c1, c2, c3):
            c.close()


def test_request_hash_content_addressing(tmp_path):
    ep = endpoint("http://127.0.0.1:9/v1")
    a = LLMClient(ep, None, api_key="sk-one")
    b = LLMClient(ep, None, api_key="sk-two")
    r = group_requests(1)[0]
    h = a.request_hash(r)
    assert h == b.request_hash(r)  # the key is not part of the cache key
    variants = [
        LLMRequest(messages=r.messages, template_version="other@1"),
        LLMRequest(messages=r.messages, template_version=r.template_version, temperature=0.7),
        LLMRequest(messages=r.messages, template_version=r.template_version, response_schema={"type": "object"}),
        LLMRequest(messages=r.messages[:1], template_version=r.template_version),
    ]
    hashes = {a.request_hash(v) for v in variants}
    assert h not in hashes and len(hashes) == 4
    assert LLMClient(endpoint("http://127.0.0.1:9/v1", model="other"), None).request_hash(r) != h
    # the encoding is part of every stored cache: changing it silently orphans users' caches
    golden = LLMRequest(messages=[{"role": "user", "content": "héllo [1]"}], template_version="t@1")
    assert LLMClient(LLMEndpoint(base_url="http://127.0.0.1:9/v1/", model="m"), None).request_hash(golden) == \
        "15eb2a8dda2d29a7b2c8eadc1b725a24d2cf0bd0c40851c090879c0503d82a74"
    # a request's `tag`, `meta` and validator are bookkeeping, not content
    assert a.request_hash(LLMRequest(messages=r.messages, template_version=r.template_version,
                                     tag="x", meta=1)) == h


def test_sampling_params_and_json_schema_are_sent(tmp_path):
    schema = {"title": "scores", "type": "object", "properties": {"score": {"type": "integer"}}}
    with start_local_server("request_echo") as srv:
        for json_schema in (True, "json_object", False):
            c = LLMClient(endpoint(srv.base_url, json_schema=json_schema, temperature=0.3, top_p=0.8,
                                   max_tokens=77), None)
            r = c.map([LLMRequest(messages=[{"role": "user", "content": "hi"}], template_version="t@1",
                                  response_schema=schema, seed=5, validate=json.loads)])[0]
            assert r.ok
            sent = r.parsed
            assert (sent["temperature"], sent["top_p"], sent["max_tokens"], sent["seed"]) == (0.3, 0.8, 77, 5)
            if json_schema == "json_object":  # llama-cpp-python's form
                assert sent["response_format"] == {"type": "json_object", "schema": schema}
            elif json_schema:
                assert sent["response_format"] == {"type": "json_schema",
                                                   "json_schema": {"name": "scores", "schema": schema}}
            else:
                assert "response_format" not in sent


@pytest.mark.parametrize("validate", [None, str.strip])
def test_truncated_is_refused_even_with_a_validator(tmp_path, validate):
    """An answer cut at max_tokens is refused whether or not the request has a validator (a
    validator that would accept any text must not make half an answer ok): asked once more, then
    failed, never cached; a validator that declares `accepts_truncated` (its format proves the
    answer complete) gets the cut answer."""
    with start_local_server("echo", faults={"truncated": 1.0}) as srv:
        c = LLMClient(endpoint(srv.base_url), tmp_path / "c.sqlite")
        r = c.map([LLMRequest(messages=[{"role": "user", "content": "a long enough answer"}],
                              template_version="t@1", validate=validate)])[0]
        assert not r.ok and "finish_reason=length" in r.error and r.attempts == 2
        assert len(c.cache) == 0
        u = c.usage()
        assert u["errors"].get("truncated") == 2 and u["parse_failures"] == 2 and u["answers"] == 2
        assert u["parse_failure_rate"] == 1.0 and u["retry_rate"] == 0.5 and u["failure_rate"] == 1.0
        if validate is not None:
            def tolerant(text):
                return text.strip()
            tolerant.accepts_truncated = True
            r = c.map([LLMRequest(messages=[{"role": "user", "content": "another long answer"}],
                                  template_version="t@1", validate=tolerant)])[0]
            assert r.ok and r.finish_reason == "length" and r.attempts == 1


def test_connection_refused_is_retried_then_failed():
    s = __import__("socket").socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    # preflight off: this is the retry policy's test (the preflight and the circuit breaker, which
    # stop a stage on a dead endpoint before this, are tests/test_reliability_endpoint.py)
    c = LLMClient(endpoint(f"http://127.0.0.1:{port}/v1", max_retries=2, preflight=False), None)
    r = c.map([LLMRequest(messages=[{"role": "user", "content": "x"}], template_version="t@1")])[0]
    assert not r.ok and r.error.startswith("connection after 3 attempts")
    assert c.usage()["errors"]["connection"] == 3


def test_map_inside_running_loop_and_acomplete(tmp_path):
    with start_local_server("labels") as srv:
        c = LLMClient(endpoint(srv.base_url), tmp_path / "c.sqlite")
        reqs = group_requests(5, run="loop")

        async def main():
            single = await c.acomplete(reqs[0])
            await c.aclose()
            return single, c.map(reqs)  # sync wrapper called from inside a running loop

        single, res = asyncio.run(main())
        assert single.ok and all(r.ok for r in res) and res[0].cached
        assert srv.stats()["requests"] == 5


def test_estimate_dry_run(tmp_path):
    with start_local_server("labels") as srv:
        ep = endpoint(srv.base_url, price_prompt_per_mtok=1.0, price_completion_per_mtok=2.0, max_tokens=100)
        reqs = group_requests(6, run="est")
        e = estimate(reqs + reqs[:2], ep)
        assert e["calls"] == 6 and e["requests"] == 8 and e["tokenizer"] in ("chars/4", "tiktoken:o200k_base")
        assert e["prompt_tokens"] > 6 * 10 and e["completion_tokens"] == 600
        assert e["est_cost_usd"] == pytest.approx((e["prompt_tokens"] * 1 + 600 * 2) / 1e6)
        assert e["per_tag"]["groupwise"]["calls"] == 6
        e2 = estimate(reqs, ep, tokenizer=lambda s: 1)
        assert e2["prompt_tokens"] == 6 * (3 + 2 * (4 + 1))
        assert srv.stats()["requests"] == 0  # a dry run sends nothing
        c = LLMClient(ep, tmp_path / "c.sqlite")
        c.map(reqs[:4])
        e3 = estimate(reqs, ep, cache_path=tmp_path / "c.sqlite")
        assert e3["calls"] == 2 and e3["cached"] == 4


def test_cache_shared_by_concurrent_processes(tmp_path):
    """Several processes write one cache file at once (WAL + busy timeout + INSERT OR IGNORE)."""
    db = tmp_path / "shared.sqlite"
    code = textwrap.dedent(f"""
        import sys
        from grouprank.llm.cache import LLMCache
        c = LLMCache({str(db)!r})
        w = int(sys.argv[1])
        for i in range(300):
            c.put(f"own-{{w}}-{{i}}", "x" * 50, 1, 1)
            c.put(f"common-{{i}}", "same", 1, 1)
            if i % 50 == 0:
                assert len(c.get_many([f"own-{{w}}-{{j}}" for j in range(i + 1)])) == i + 1
        c.close()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(w)]) for w in range(4)]
    assert [p.wait(60) for p in procs] == [0, 0, 0, 0]
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 4 * 300 + 300
    con.close()


def test_server_models_endpoint_via_openai_client():
    from openai import OpenAI
    with start_local_server("echo", model="judge-x") as srv:
        models = OpenAI(base_url=srv.base_url, api_key="x", max_retries=0).models.list()
        assert [m.id for m in models.data] == ["judge-x"]
        out = OpenAI(base_url=srv.base_url, api_key="x", max_retries=0).chat.completions.create(
            model="judge-x", messages=[{"role": "user", "content": "ping"}])
        assert out.choices[0].message.content == "ping" and out.usage.prompt_tokens >= 1
        st = srv.stats()
        assert st["per_prompt"][prompt_hash([{"role": "user", "content": "ping"}])] == {"requests": 1, "ok": 1}
