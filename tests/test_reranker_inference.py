"""Groupwise / pointwise / listwise reranking: grouping, passes, fusion, accounting,
and the documented fallback — a malformed or partial answer never crashes inference and the
documents it does not score validly get group score 0 (`grouprank.scoring.call`)."""
import math

import pytest

from grouprank.prompts.common import extract_query_and_docs
from grouprank.prompts import pointwise as PW
from grouprank.prompts.groupwise import SYSTEM_PROMPT, render_target
from grouprank.reranker.inference import (FunctionBackend, LLMBackend, rerank_groupwise, rerank_listwise,
                                          rerank_pointwise)
from grouprank.scoring.windows import sliding_windows

N = 30
DOCS = {f"d{i:02d}": (f"doc {i} " + ("GOOD " * (i % 3 == 0)) + ("POISON" * (i == 7))) for i in range(N)}
QUERIES = {"q1": "find good docs", "q2": "another query"}
CANDS = {q: [(d, float(N - i)) for i, d in enumerate(sorted(DOCS))] for q in QUERIES}  # d00 best first-stage


def _user(messages):
    return [m for m in messages if m["role"] == "user"][-1]["content"]


def respond(messages, body=None, fault=None):
    """Deterministic stand-in model: GOOD docs 10, others 0; a group holding the POISON doc gets a
    malformed answer (the fallback case); pointwise: 10 or 0; listwise: GOOD docs first."""
    q, docs = extract_query_and_docs(_user(messages))
    if messages[0]["content"] == PW.SYSTEM_PROMPT:
        return '{"score": %d, "reason": "r"}' % (10 if "GOOD" in docs[0][1] else 0)
    if messages[0]["content"] == SYSTEM_PROMPT:
        if any("POISON" in t for _, t in docs):
            return '<reason>cut off</reason><answer>{"[1]": 10, "[2]": </answer>'  # partial JSON
        return render_target("r", [10 if "GOOD" in t else 0 for _, t in docs])
    order = sorted(docs, key=lambda x: ("GOOD" not in x[1], x[0]))
    return " > ".join(f"[{lab}]" for lab, _ in order)


def minmax_first():
    vals = [float(N - i) for i in range(N)]
    lo, hi = min(vals), max(vals)
    return {d: (v - lo) / (hi - lo) for d, v in zip(sorted(DOCS), vals)}


def test_groupwise_scores_fusion_fallback_and_accounting():
    res = rerank_groupwise(CANDS, QUERIES, DOCS, FunctionBackend(respond), group_size=8, passes=1, alpha=0.6)
    first = minmax_first()
    by = {(r["query_id"], r["doc_id"]): r for r in res.run}
    for q in QUERIES:
        # the poisoned group (holding d07) fell back to 0 for all its docs
        s = by[(q, "d07")]["score"]
        assert s == pytest.approx(0.4 * first["d07"])
        poisoned = [d for d in DOCS if by[(q, d)]["score"] == pytest.approx(0.4 * first[d])]
        assert 2 <= len(poisoned)  # the whole group, including its GOOD docs
        for d in DOCS:
            if d not in poisoned:
                expect = 0.6 * (1.0 if "GOOD" in DOCS[d] else 0.0) + 0.4 * first[d]
                assert by[(q, d)]["score"] == pytest.approx(expect)
        assert res.per_query[q]["calls"] == math.ceil(N / 8) and res.per_query[q]["rounds"] == 1
        assert res.per_query[q]["failed"] == 1
        ranks = sorted(r["rank"] for r in res.run if r["query_id"] == q)
        assert ranks == list(range(1, N + 1))
    assert res.summary["answers"]["bad_json"] == 2 and res.summary["total_calls"] == 2 * math.ceil(N / 8)


def test_passes_average_and_failed_call_never_raises():
    calls = {"n": 0}

    def flaky(messages):
        calls["n"] += 1
        if calls["n"] % 2 == 0:
            raise RuntimeError("server exploded")       # call failure -> fallback 0
        return respond(messages)

    cands = {"q1": [("d03", 2.0), ("d04", 1.0)]}        # one group per pass: pass 0 ok, pass 1 fails
    res = rerank_groupwise(cands, QUERIES, DOCS, FunctionBackend(flaky), group_size=20, passes=2, alpha=0.6)
    by = {r["doc_id"]: r["score"] for r in res.run}
    assert by["d03"] == pytest.approx(0.6 * (10 / 10 + 0) / 2 + 0.4 * 1.0)
    assert by["d04"] == pytest.approx(0.0)
    assert res.per_query["q1"]["calls"] == 2 and res.summary["answers"]["call_failed"] == 1


@pytest.mark.parametrize("answer", ["", "garbage", "<reason>x</reason>", '<reason>x</reason><answer>{"[1]": 99}</answer>',
                                    '<answer>{"[1]": 10, "[2]": 10}</answer>', None])
def test_any_malformed_answer_gives_fallback(answer):
    cands = {"q1": [("d03", 2.0), ("d06", 1.0)]}
    res = rerank_groupwise(cands, QUERIES, DOCS, FunctionBackend(lambda m: answer), group_size=20, alpha=0.6)
    assert {r["doc_id"]: r["score"] for r in res.run} == {"d03": pytest.approx(0.4), "d06": pytest.approx(0.0)}


def test_shuffle_is_seeded_and_changes_with_pass():
    seen = []

    def record(messages):
        seen.append(tuple(t for _, t in extract_query_and_docs(_user(messages))[1]))
        return respond(messages)

    rerank_groupwise({"q1": CANDS["q1"][:10]}, QUERIES, DOCS, FunctionBackend(record), group_size=20, passes=2)
    first_run = list(seen)
    seen.clear()
    rerank_groupwise({"q1": CANDS["q1"][:10]}, QUERIES, DOCS, FunctionBackend(record), group_size=20, passes=2)
    assert seen == first_run                 # deterministic
    assert first_run[0] != first_run[1]      # reshuffled between passes
    assert sorted(first_run[0]) == sorted(first_run[1])


def test_pointwise_and_listwise_costs_and_orders():
    seen = []
    pw = rerank_pointwise(CANDS, QUERIES, DOCS, FunctionBackend(lambda m: seen.append(m) or respond(m)), alpha=1.0)
    assert pw.per_query["q1"]["calls"] == N and pw.summary["sequential_rounds"] == 1
    assert all(m[0]["content"] == PW.SYSTEM_PROMPT for m in seen)   # the judges' pointwise prompt
    top = [r["doc_id"] for r in pw.run if r["query_id"] == "q1"][:10]
    assert all("GOOD" in DOCS[d] for d in top)
    lw = rerank_listwise(CANDS, QUERIES, DOCS, FunctionBackend(respond), window=10, stride=5)
    assert lw.per_query["q1"]["rounds"] == len(sliding_windows(N, 10, 5)) == 5
    top = [r["doc_id"] for r in lw.run if r["query_id"] == "q1"][:5]   # a window carries up stride docs
    assert all("GOOD" in DOCS[d] for d in top)


def test_listwise_unparsable_keeps_window_order():
    lw = rerank_listwise({"q1": CANDS["q1"][:12]}, QUERIES, DOCS, FunctionBackend(lambda m: "no idea"),
                         window=5, stride=3)
    assert [r["doc_id"] for r in lw.run] == [d for d, _ in CANDS["q1"][:12]]
    assert lw.summary["answers"]["unparsed"] == lw.summary["total_calls"]


def test_groupwise_through_llm_client_and_faulty_local_server(tmp_path):
    """Real HTTP: the project's LLMClient against the local OpenAI-compatible server that injects
    malformed / truncated / wrong-label answers; nothing crashes, failed groups fall back to 0."""
    from pathlib import Path

    from grouprank.config import LLMEndpoint
    from tests.support.fake_openai_server import start_local_server
    here = str(Path(__file__).resolve().parent)
    with start_local_server("test_reranker_inference:respond", pythonpath=[here], fault_rate=0.5,
                            fault_kinds=["malformed", "truncated", "wrong_labels"], seed=6) as srv:
        ep = LLMEndpoint(name="t", base_url=srv.base_url, max_concurrency=8, max_retries=1, timeout_s=30)
        be = LLMBackend(endpoint=ep, cache_path=str(tmp_path / "c.sqlite"), max_tokens=256)
        cands = {q: [c for c in CANDS[q] if c[0] != "d07"] for q in QUERIES}  # no poisoned group here
        res = rerank_groupwise(cands, QUERIES, DOCS, be, group_size=5, passes=2, alpha=0.6)
    vals = dict(cands["q1"])
    lo, hi = min(vals.values()), max(vals.values())
    first = {d: (v - lo) / (hi - lo) for d, v in vals.items()}
    assert res.summary["total_calls"] == 2 * 2 * math.ceil((N - 1) / 5)
    assert res.summary["total_prompt_tokens"] > 0
    assert res.summary["answers"]["ok"] > 0 and res.summary["total_failed"] > 0  # faults did bite
    # every score is 0.6 * (k/2) * good + 0.4 * minmax, k = passes that parsed (0, 1 or 2)
    for r in res.run:
        if r["query_id"] != "q1":
            continue
        g = (r["score"] - 0.4 * first[r["doc_id"]]) / 0.6
        assert min(abs(g - v) for v in (0.0, 0.5, 1.0)) < 1e-9
        if "GOOD" not in DOCS[r["doc_id"]]:
            assert g == pytest.approx(0.0)
