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
from grouprank.judges.pointwise import PointwiseJudge
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


@pytest.fixture()
def answers(monkeypatch):
    """request hash -> LLMResult, as the code under test receives each answer (a spy on the real
    `LLMClient.amap`; asking again is not reproducible: llama.cpp's prompt cache can change a
    greedy answer)."""
    from grouprank.llm.client import LLMClient as Client
    got: dict[str, object] = {}
    real_amap = Client.amap

    async def recording_amap(self, reqs, progress=None):
        results = await real_amap(self, reqs, progress)
        got.update({r.request_hash: r for r in results})
        return results
    monkeypatch.setattr(Client, "amap", recording_amap)
    return got


def test_every_judge_kind_through_the_real_server(smollm2, pool, tmp_path, answers):
    """Every row a judge writes agrees with SmolLM2's real answer to its request, read again here with
    the template's parser: a pair is `ok` exactly when its answer yields its score / label (and then
    holds that value), else `failed` with the reason. (Before: any mix of ok and failed rows passed,
    and the rank check looked at the ok rows only.)"""
    from grouprank.judges.runner import run_judges
    from grouprank.llm.types import ParseError
    from grouprank.prompts import groupwise as GW
    from grouprank.prompts import listwise as LW

    ep = smollm2.endpoint(max_tokens=64)
    # SmolLM2 free-form rarely follows a format; the same pointwise judge under the answer schema
    # (a llama.cpp grammar) always does: both paths, failed and ok, are checked
    ep_json = smollm2.endpoint(name="smollm2-json", max_tokens=64, json_schema="json_object")
    specs = [JudgeSpec(id="pw", kind="pointwise", endpoint=ep.name), JudgeSpec(id="lw", kind="listwise", endpoint=ep.name),
             JudgeSpec(id="gw", kind="groupwise", group_size=2, max_tokens=128, endpoint=ep.name),
             JudgeSpec(id="pwj", kind="pointwise", endpoint="smollm2-json")]
    cfg = RunConfig.model_validate({"work_dir": str(tmp_path),
                                    "llm": {"endpoints": [ep.model_dump(), ep_json.model_dump()]},
                                    "judges": {"judges": [s.model_dump() for s in specs]}})
    rows, usage = run_judges(cfg, pool)
    by: dict[str, dict[str, dict]] = {}
    for r in rows:
        by.setdefault(r["judge_id"], {})[r["doc_id"]] = r
    assert [by["pwj"][d]["status"] for d in ("d1", "d2")] == ["ok", "ok"]  # the grammar's answers parse
    for jid in ("pw", "lw", "gw", "pwj"):
        assert sorted(by[jid]) == ["d1", "d2"]
        u = usage[jid]
        assert u["calls"] >= 1 and u["answers"] >= 1 and u["model"] == "smollm2"
        assert u["parse_failures"] == u["errors"].get("parse", 0) + u["errors"].get("truncated", 0)
        assert u["parse_failure_rate"] == round(u["parse_failures"] / u["answers"], 4)
        assert u["pairs_ok"] == sum(r["status"] == "ok" for r in by[jid].values())
        for r in by[jid].values():
            assert (r["status"] == "failed") == bool(r["error"]), r
            assert r["request_hash"] in answers, r  # every row names the request it was judged in

    # pointwise: ok <=> PW.parse reads a score from the answer; the grade from its logprobs or number
    for jid in ("pw", "pwj"):
        for row in by[jid].values():
            res = answers[row["request_hash"]]
            try:
                score, _ = PW.parse(res.text)
            except ParseError:
                assert row["status"] == "failed" and row["score"] is None, (row, res.text)
                continue
            ev = PW.expected_grade(res.logprobs, res.text)
            assert row["status"] == "ok", (row, res.text)
            assert row["score"] == pytest.approx(ev[0] if ev is not None else float(score)), (row, res.text)

    # groupwise: each document ok <=> the group's answer scores its label ([k] from group_id "...#k")
    for row in by["gw"].values():
        res = answers[row["request_hash"]]
        pg = GW.parse_output(res.text or "", 2)
        scores = pg.scores if pg.ok else GW.partial_scores(res.text, 2)[0]
        s = scores[int(row["group_id"].rsplit("#", 1)[1]) - 1]
        if s is None:
            assert row["status"] == "failed" and row["score"] is None, (row, res.text)
        else:
            assert row["status"] == "ok" and row["score"] == pytest.approx(float(s)), (row, res.text)

    # listwise: one window of both documents (pool order); the labels its answer names, in order,
    # get ranks 1..k; a document it does not name is failed, with no rank
    (h,) = {r["request_hash"] for r in by["lw"].values()}
    named, _ = LW.parse_partial(answers[h].text, 2)
    want = {pool.pools["q1"][i - 1]: k for k, i in enumerate(named, 1)}
    for d in ("d1", "d2"):
        row = by["lw"][d]
        if d in want:
            assert row["status"] == "ok" and row["rank"] == want[d], (row, answers[h].text)
        else:
            assert row["status"] == "failed" and row["rank"] is None, (row, answers[h].text)


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


def test_query_generation_and_cut_answers(smollm2, tmp_path, answers):
    """Real query generation: each record's decision is what the template's parser makes of
    SmolLM2's real answer (kept with exactly the parsed query, or parse_error with the parser's
    reason; before: either decision passed); an answer cut at max_tokens is never kept (before:
    half a query was)."""
    import pyarrow as pa
    from grouprank.llm.types import ParseError
    from grouprank.queries import templates as T
    from grouprank.queries.generation import generate_queries, parse_query
    docs = pa.table({"doc_id": ["d1", "d3"], "title": [None, None], "text": [DOCS["d1"], DOCS["d3"]]})
    client = LLMClient(smollm2.endpoint(), None, stage="queries")
    recs = generate_queries(docs, ["d1", "d3"], client, ["keyword", "question"], collection="t")
    assert len(recs) == 4 and len(answers) == 4
    by_doc_type = {(r.meta[0], r.meta[1]): r for r in answers.values()}
    for rec in recs:
        res = by_doc_type[(rec["source_doc_id"], rec["query_type"])]
        try:
            want = parse_query(res.text, T.get(rec["query_type"]), DOCS[rec["source_doc_id"]])["query"]
        except ParseError as e:
            assert rec["decision"] == "parse_error", (rec, res.text)
            assert str(e) in rec["decision_detail"], (rec["decision_detail"], str(e))
            continue
        assert rec["decision"] == "kept" and rec["text"] == want, (rec, res.text)
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
