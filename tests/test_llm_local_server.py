"""Every LLM path against a real model: llama-cpp-python's server with SmolLM2-135M-Instruct
(tests.support.llama_server, started once for the module), tiny sizes. SmolLM2 is a weak model:
these tests check that the machinery survives what it really answers (answers parsed or refused
with a reason, counted, cut answers never kept), not that its labels are good."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from grouprank.config import JudgeSpec, RunConfig
from grouprank.errors import UserError
from grouprank.judges.base import JudgePool
from grouprank.llm import LLMClient, LLMRequest
from grouprank.llm.config import LLMEndpoint
from grouprank.prompts import pointwise as PW
from tests.support.llama_server import smollm2  # noqa: F401 - module-scoped fixture

pytestmark = pytest.mark.timeout(600)

QUERY = "what causes malaria"
DOCS = {
    "d1": "Malaria is caused by Plasmodium parasites, which are spread to people through the bites of "
          "infected female Anopheles mosquitoes.",
    "d2": "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France.",
    "d3": "Symptoms of malaria include fever, chills and headache, usually 10 to 15 days after the bite.",
}


@pytest.fixture(scope="module")
def pool():
    return JudgePool(queries={"q1": QUERY}, docs=dict(DOCS), pools={"q1": ["d1", "d2"]})


def _cfg(tmp_path, ep, specs):
    return RunConfig.model_validate({"work_dir": str(tmp_path), "llm": {"endpoints": [ep.model_dump()]},
                                     "judges": {"judges": [s.model_dump() for s in specs]}})


def test_every_judge_kind_through_the_real_server(smollm2, pool, tmp_path):
    from grouprank.judges.runner import run_judges
    ep = smollm2.endpoint(max_tokens=64)
    specs = [JudgeSpec(id="pw", kind="pointwise"), JudgeSpec(id="lw", kind="listwise"),
             JudgeSpec(id="gw", kind="groupwise", group_size=2, max_tokens=128)]
    rows, usage = run_judges(_cfg(tmp_path, ep, specs), pool)
    by = {}
    for r in rows:
        by.setdefault(r["judge_id"], []).append(r)
    for jid in ("pw", "lw", "gw"):
        got = by[jid]
        assert sorted(r["doc_id"] for r in got) == ["d1", "d2"]
        u = usage[jid]
        assert u["calls"] >= 1 and u["answers"] >= 1 and u["model"] == "smollm2"
        assert u["parse_failures"] == u["errors"].get("parse", 0) + u["errors"].get("truncated", 0)
        assert 0.0 <= u["parse_failure_rate"] <= 1.0 and u["parse_failure_rate"] == round(
            u["parse_failures"] / u["answers"], 4)
        for r in got:
            assert r["status"] in ("ok", "failed")
            if r["status"] == "failed":
                assert r["error"]
            elif jid in ("pw", "gw"):
                assert 0.0 <= r["score"] <= 10.0
            else:
                assert r["rank"] >= 1
    lw_ok = [r for r in by["lw"] if r["status"] == "ok"]
    assert sorted(r["rank"] for r in lw_ok) == list(range(1, len(lw_ok) + 1))


def test_pointwise_grades_come_from_logprobs_when_the_answer_has_them(smollm2, pool, tmp_path):
    """The real server returns top_logprobs whose tokens spell the answer; the judge's grade of an
    ok answer is `expected_grade` over them when the score is found, else the generated number.
    With `logprobs: false` none are asked for and the grade is the generated number."""
    from grouprank.judges.pointwise import PointwiseJudge
    ep = smollm2.endpoint(max_tokens=96)
    client = LLMClient(ep, tmp_path / "c.sqlite", stage="t")
    judge = PointwiseJudge(JudgeSpec(id="pw", kind="pointwise"), client, max_doc_chars=600)
    reqs = judge.plan(pool)
    assert all(r.top_logprobs == PW.TOP_LOGPROBS for r in reqs)
    results = client.map(reqs)
    for res in results:  # failed answers keep theirs too
        assert res.logprobs, "llama.cpp returns top_logprobs for every answer"
        assert "".join(t[0] for t in res.logprobs) == res.text
        assert all(len(t[2]) >= 1 for t in res.logprobs)
    rows = judge.run(pool)  # answers now from the cache, logprobs included
    ok = [r for r in rows if r["status"] == "ok"]
    assert judge.grading["logprobs"] + judge.grading["generated"] == len(ok)
    for row, res in zip(rows, results):
        if row["status"] != "ok":
            continue
        ev = PW.expected_grade(res.logprobs, res.text)
        want = ev[0] if ev is not None else float(PW.parse(res.text)[0])
        assert row["score"] == pytest.approx(want)
    # no logprobs asked: generated numbers only
    client2 = LLMClient(ep.model_copy(update={"logprobs": False}), None, stage="t")
    j2 = PointwiseJudge(JudgeSpec(id="pw", kind="pointwise"), client2, max_doc_chars=600)
    assert all(r.top_logprobs is None for r in j2.plan(pool))
    r2 = client2.map(j2.plan(pool)[:1])[0]
    assert r2.logprobs is None
    client.close()
    client2.close()


def test_json_object_schema_constrains_the_real_servers_answers(smollm2, pool, tmp_path):
    """`json_schema: json_object` sends the schema in the form llama-cpp-python's server turns into a
    grammar: every pointwise answer is then the schema's JSON object (free-form, SmolLM2 answered 1 of
    20 SciFact pairs in a parseable form when measured)."""
    from grouprank.judges.pointwise import PointwiseJudge
    client = LLMClient(smollm2.endpoint(max_tokens=64, json_schema="json_object", logprobs=False),
                       tmp_path / "c.sqlite", stage="t")
    judge = PointwiseJudge(JudgeSpec(id="pw", kind="pointwise"), client, max_doc_chars=600)
    results = client.map(judge.plan(pool))
    assert [r.ok for r in results] == [True, True]
    for r in results:
        obj = json.loads(r.text)
        assert set(obj) == {"score", "reason"} and isinstance(obj["score"], int) and 0 <= obj["score"] <= 10
    client.close()


def test_query_generation_and_cut_answers(smollm2, tmp_path):
    """Real query generation: every record kept or refused with a reason; an answer cut at
    max_tokens is never kept (before: half a query was)."""
    import pyarrow as pa
    from grouprank.queries.generation import generate_queries
    docs = pa.table({"doc_id": ["d1"], "title": [None], "text": [DOCS["d1"]]})
    client = LLMClient(smollm2.endpoint(), None, stage="queries")
    recs = generate_queries(docs, ["d1"], client, ["question"], collection="t")
    assert len(recs) == 1 and recs[0]["decision"] in ("kept", "parse_error")
    if recs[0]["decision"] == "kept":
        assert len(recs[0]["text"].split()) >= 2
    else:
        assert recs[0]["decision_detail"]
    cut = generate_queries(docs, ["d1"], client, ["question"], collection="t", max_tokens=3)
    assert cut[0]["decision"] == "parse_error" and "max_tokens" in cut[0]["decision_detail"]
    assert client.usage()["errors"].get("truncated", 0) >= 1
    client.close()


def test_groupwise_reranking_through_the_real_server(smollm2):
    from grouprank.reranker.inference import LLMBackend, rerank_groupwise
    client = LLMClient(smollm2.endpoint(max_tokens=128), None, stage="reranker")
    cands = {"q1": [("d1", 3.0), ("d2", 2.0), ("d3", 1.0)]}
    res = rerank_groupwise(cands, {"q1": QUERY}, DOCS, LLMBackend(client, max_tokens=128), group_size=3,
                           passes=1, top=3)
    ranked = sorted(res.run, key=lambda r: r["rank"])
    assert sorted(r["doc_id"] for r in ranked) == ["d1", "d2", "d3"]
    assert [r["rank"] for r in ranked] == [1, 2, 3]
    assert res.per_query["q1"]["calls"] >= 1
    assert client.usage()["answers"] >= 1
    client.close()


def test_managed_endpoint_starts_on_demand_with_a_stable_cache_identity(tmp_path):
    """`{name: local, managed: smollm2}`: the client starts the server itself (once per process),
    talks to it, keys its cache by the model and not the port, and the server is stopped by
    `stop_all` (registered at exit)."""
    from grouprank.llm import managed
    from grouprank.llm.keys import request_hash
    ep = LLMEndpoint(name="local", managed="smollm2", managed_threads=2, max_tokens=8, timeout_s=120)
    c = LLMClient(ep, tmp_path / "c.sqlite")
    try:
        assert c.endpoint.base_url.startswith("http://127.0.0.1:") and c.endpoint.max_concurrency == 2
        srv = managed._SERVERS["smollm2"]
        assert LLMClient(ep, None).endpoint.base_url == c.endpoint.base_url  # reused, not restarted
        r = c.map([LLMRequest(messages=[{"role": "user", "content": "Say hi"}], template_version="t@1")])[0]
        assert r.attempts >= 1 and (r.ok or "max_tokens" in (r.error or ""))
        req = LLMRequest(messages=[{"role": "user", "content": "x"}], template_version="t@1")
        other_port = c.endpoint.model_copy(update={"base_url": "http://127.0.0.1:1/v1"})
        assert request_hash(req, c.endpoint) == request_hash(req, other_port) == request_hash(req, ep)
        assert (tmp_path / "llm_server_smollm2.log").exists()
    finally:
        c.close()
        managed.stop_all()
    assert srv.proc is None and "smollm2" not in managed._SERVERS


def test_managed_server_errors_name_the_model_and_reason(tmp_path):
    from grouprank.llm.managed import ManagedServer
    with pytest.raises(UserError, match="unknown local model 'nosuch'"):
        ManagedServer("nosuch")
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a GGUF file" * 10)
    with pytest.raises(UserError) as e:
        ManagedServer(str(bad), log_dir=tmp_path, threads=1, startup_timeout_s=60).start()
    msg = str(e.value)
    assert "'broken'" in msg and "exited with code" in msg and str(tmp_path / "llm_server_broken.log") in msg
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UserError, match=f"port {port} on 127.0.0.1 is in use"):
            ManagedServer("smollm2", port=port, threads=1, log_dir=tmp_path).start()


def test_cli_serve_status_stop(tmp_path):
    env = dict(os.environ, GROUPRANK_STATE_DIR=str(tmp_path / "state"))

    def cli(*args):
        p = subprocess.run([sys.executable, "-m", "grouprank.cli", "llm", *args], env=env, capture_output=True,
                           text=True, timeout=180)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    rec = cli("serve", "--model", "smollm2", "--threads", "1")
    try:
        assert rec["model"] == "smollm2" and rec["base_url"].startswith("http://127.0.0.1:")
        st = cli("status")
        assert [(s["model"], s["pid"], s["healthy"]) for s in st["servers"]] == [("smollm2", rec["pid"], True)]
        assert cli("serve")["pid"] == rec["pid"]  # already running: reused
    finally:
        out = cli("stop")
    assert [s["pid"] for s in out["stopped"]] == [rec["pid"]] and out["stopped"][0]["stopped"]
    assert cli("status")["servers"] == []
