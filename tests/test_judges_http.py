"""Pointwise, listwise and groupwise judges end to end through the real HTTP path: the LLM client
against the local OpenAI-compatible server (a subprocess on 127.0.0.1) answering with the local
judge's scores via tests.support.judge_responder. Small DL19 pools."""
from __future__ import annotations

import json

import numpy as np
import pytest

from data_schemas import DOCUMENTS, JUDGMENTS, LABELS
from grouprank.config import JudgeSpec, LLMEndpoint, RunConfig
from grouprank.judges.base import JudgePool
from grouprank.judges.fusion import fuse_labels
from grouprank.judges.runner import dry_run, run_judges

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def small_pool():
    """3 DL19 queries x 8 judged passages (4 with grade >= 2, 4 with grade 0)."""
    from grouprank.collections import load_collection
    c = load_collection("trec_dl19_passage")
    qr = c.qrels.to_pandas()
    qids = sorted(qr.query_id.unique())[:3]
    rows = []
    for q in qids:
        sub = qr[qr.query_id == q].sort_values("doc_id")
        rows += [(q, d) for d in sub[sub.grade >= 2].doc_id[:4]] + [(q, d) for d in sub[sub.grade == 0].doc_id[:4]]
    import pandas as pd
    cand = pd.DataFrame(rows, columns=["query_id", "doc_id"])
    cand["rank"] = cand.groupby("query_id").cumcount() + 1
    pool = JudgePool.from_tables(cand, c.documents, c.queries)
    grades = {(q, d): g for q, d, g in zip(qr.query_id, qr.doc_id, qr.grade)}
    return pool, grades


@pytest.fixture(scope="module")
def server(small_pool, tmp_path_factory):
    from tests.support.fake_openai_server import start_local_server
    pool, _ = small_pool
    d = tmp_path_factory.mktemp("srv")
    docs = DOCUMENTS.from_records([{"doc_id": k, "title": None, "text": v, "collection": "t"}
                                   for k, v in pool.docs.items()])
    DOCUMENTS.write(docs, d / "bg.parquet")
    h = start_local_server("tests.support.judge_responder:respond", seed=3, log_path=d / "server.log",
                           env={"GROUPRANK_JUDGE_CORPUS": str(d / "bg.parquet")}, startup_timeout=120)
    yield h
    h.stop()


def make_cfg(tmp_path, base_url, *, timeout_s=30.0, specs=None):
    ep = LLMEndpoint(name="local", base_url=base_url, model="local-responder", timeout_s=timeout_s,
                     max_retries=8, backoff_base_s=0.01, backoff_max_s=0.05, retry_after_max_s=0.1,
                     max_concurrency=8)
    specs = specs or [
        JudgeSpec(id="pw", kind="pointwise"),
        # a tiny budget forces the sliding window: 8 docs, window 4, stride 2 -> 3 windows
        JudgeSpec(id="lw", kind="listwise", window=4, stride=2, context_budget_tokens=50),
        JudgeSpec(id="gw", kind="groupwise", group_size=3, passes=2),
    ]
    return RunConfig.model_validate({"work_dir": str(tmp_path), "llm": {"endpoints": [ep.model_dump()]},
                                     "judges": {"judges": [s.model_dump() for s in specs]}})


def by_judge(rows, judge):
    return [r for r in rows if r["judge_id"] == judge]


def test_dry_run_sends_nothing(tmp_path, server, small_pool):
    pool, _ = small_pool
    server.reset()
    cfg = make_cfg(tmp_path, server.base_url)
    est = dry_run(cfg, pool)
    j = est["judges"]
    assert j["pw"]["calls"] == 24
    assert j["lw"]["calls"] == 3 * 3                          # 3 windows per query
    assert j["gw"]["calls"] == 2 * 3 * 3                      # 2 passes x 3 queries x ceil(8/3) groups
    assert all(v["prompt_tokens"] > 0 for v in j.values())
    assert est["total"]["calls"] == 24 + 9 + 18
    assert server.stats(detail=False)["requests"] == 0
    # the console line: the completion figure is a ceiling; $0 without prices says so
    from grouprank.judges.stage import dry_run_text
    assert not any(v["prices_set"] for v in j.values())
    text = dry_run_text(est)
    assert f"at most {est['total']['completion_tokens']:,} completion tokens (a ceiling" in text
    assert "cost $0 (no prices set" in text
    priced = {**est, "judges": {k: {**v, "prices_set": True} for k, v in j.items()},
              "total": {**est["total"], "est_cost_usd": 1.5}}
    assert "cost $1.5000 at the endpoints' prices, completion at its ceiling" in dry_run_text(priced)


def test_three_judges_end_to_end(tmp_path, server, small_pool):
    pool, grades = small_pool
    server.reset()
    cfg = make_cfg(tmp_path, server.base_url)
    rows, usage = run_judges(cfg, pool)
    J = JUDGMENTS.from_records(rows)
    JUDGMENTS.validate_table(J)
    assert J.num_rows == 24 + 24 + 48
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows if r["status"] != "ok"][:3]
    assert all(len(r["request_hash"]) == 64 for r in rows)
    assert all(r["model"] == "local-responder" for r in rows)
    assert not any(r["injection_flag"] for r in rows)
    # pointwise: integer 0-10 with the responder's rationale; tokens accounted
    pw = by_judge(rows, "pw")
    assert all(r["score"] == int(r["score"]) and 0 <= r["score"] <= 10 for r in pw)
    assert all("not an LLM" in r["rationale"] for r in pw)
    assert sum(r["prompt_tokens"] for r in pw) == usage["pw"]["prompt_tokens"] > 0
    # listwise: a permutation 1..8 per query
    lw = by_judge(rows, "lw")
    for q in pool.pools:
        assert sorted(r["rank"] for r in lw if r["query_id"] == q) == list(range(1, 9))
    assert {r["group_id"] for r in lw} <= {"w0", "w1", "w2"}
    # groupwise: two passes, groups of 3/3/2
    gw = by_judge(rows, "gw")
    assert {r["pass_index"] for r in gw} == {0, 1}
    # the HTTP path scores the same as the local scorer (the pointwise answer is its rounded score); a
    # pointwise prompt holds one document, so its pool-relative features are those of a pool of one
    from grouprank.judges.local_scorer import LocalScorer
    sc = LocalScorer(dict(pool.docs))
    for q, dids in pool.pools.items():
        direct = [sc.score_ids(pool.queries[q], [d])[0] for d in dids]
        got = {r["doc_id"]: r["score"] for r in pw if r["query_id"] == q}
        assert [got[d] for d in dids] == [min(10, max(0, round(x))) for x in direct]
    # sanity of the local scores: relevant passages (NIST >= 2) score higher on average
    rel = [r["score"] for r in pw if grades[(r["query_id"], r["doc_id"])] >= 2]
    non = [r["score"] for r in pw if grades[(r["query_id"], r["doc_id"])] == 0]
    assert np.mean(rel) > np.mean(non)
    # fuse the three judges
    L, rep = fuse_labels(J)
    LABELS.validate_table(L)
    assert L.num_rows == 24 and rep.unlabelled == [] and set(rep.weights) == {"pw", "lw", "gw"}
    assert all(r["n_judges"] == 3 for r in L.to_pylist())
    # a rerun is answered from the cache: no new request reaches the server
    n_before = server.stats(detail=False)["requests"]
    rows2, usage2 = run_judges(cfg, pool)
    assert server.stats(detail=False)["requests"] == n_before
    assert usage2["pw"]["cached_calls"] == 24
    key = lambda r: (r["judge_id"], r["query_id"], r["doc_id"], r["pass_index"])  # noqa: E731
    assert sorted(rows2, key=key) == sorted(rows, key=key)


def _check_every_pair_once(rows, pool, specs):
    for s in specs:
        passes = s.passes if s.kind == "groupwise" else 1
        got = [(r["query_id"], r["doc_id"], r["pass_index"]) for r in by_judge(rows, s.id)]
        assert len(got) == len(set(got)) == pool.n_pairs * passes, s.id
        for r in by_judge(rows, s.id):
            if r["status"] == "ok":
                assert (r["score"] is not None) or (r["rank"] is not None)
                assert r["error"] is None
            else:
                assert r["status"] == "failed" and r["error"], r


def test_faults_every_pair_labelled_or_failed_with_reason(tmp_path, server, small_pool):
    """20 % injected faults spread over every kind (429, 500, hang, malformed, truncated,
    wrong labels): every pair ends ok or failed-with-reason, exactly once, and the server never
    answered a prompt successfully twice."""
    from tests.support.fake_openai_server import FAULT_KINDS
    pool, _ = small_pool
    server.reset()
    server.control(fault_rates={k: 0.2 / len(FAULT_KINDS) for k in FAULT_KINDS})
    try:
        cfg = make_cfg(tmp_path, server.base_url, timeout_s=1.0)
        rows, usage = run_judges(cfg, pool)
        st = server.stats(detail=False)
    finally:
        server.control(fault_rates={})
    _check_every_pair_once(rows, pool, cfg.judges.judges)
    assert sum(st["faults"].values()) > 0 and len(st["faults"]) >= 4, st["faults"]
    assert st["prompts_ok_more_than_once"] == 0
    ok = sum(r["status"] == "ok" for r in rows)
    assert ok >= 0.8 * len(rows)   # retries recover almost everything at 20 %
    JUDGMENTS.validate_table(JUDGMENTS.from_records(rows))


@pytest.mark.parametrize("kind", ["429", "500", "hang", "malformed", "truncated", "wrong_labels"])
def test_each_fault_kind_at_20_percent(tmp_path, server, small_pool, kind):
    """Each fault kind alone at 20 %: same invariants, and transport faults are fully recovered."""
    pool, _ = small_pool
    server.reset()
    server.control(fault_rates={kind: 0.2})
    specs = [JudgeSpec(id="p", kind="pointwise"), JudgeSpec(id="l", kind="listwise", window=4, stride=2,
                                                            context_budget_tokens=50),
             JudgeSpec(id="g", kind="groupwise", group_size=3)]
    try:
        cfg = make_cfg(tmp_path, server.base_url, timeout_s=1.0, specs=specs)
        rows, usage = run_judges(cfg, pool)
        st = server.stats(detail=False)
    finally:
        server.control(fault_rates={})
    _check_every_pair_once(rows, pool, specs)
    assert st["faults"].get(kind, 0) > 0 and st["prompts_ok_more_than_once"] == 0
    if kind in ("429", "500", "hang", "malformed"):   # retried with backoff: nothing lost
        assert all(r["status"] == "ok" for r in rows)


def test_wrong_labels_are_retried_then_recorded_as_failed(tmp_path, server, small_pool):
    """Most answers carry wrong document labels: the client asks once more, then the documents
    the answers did not score are failed with the reason; the rest keep their (genuine) values."""
    pool, _ = small_pool
    server.reset()
    server.control(fault_rates={"wrong_labels": 0.85})
    specs = [JudgeSpec(id="pw2", kind="pointwise"), JudgeSpec(id="lw2", kind="listwise"),
             JudgeSpec(id="gw2", kind="groupwise", group_size=4)]
    try:
        cfg = make_cfg(tmp_path, server.base_url, specs=specs)
        rows, usage = run_judges(cfg, pool)
        st = server.stats(detail=True)
    finally:
        server.control(fault_rates={})
    _check_every_pair_once(rows, pool, specs)
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed, "at an 85 % wrong-label rate some answers must fail twice"
    assert all("answer" in r["error"] or "parse" in r["error"] for r in failed)
    # each failed request was sent exactly twice (the answer, then one retry)
    per = st["per_prompt"]
    assert max(v["requests"] for v in per.values()) == 2
    assert usage["pw2"]["parse_retries"] > 0
    # listwise: a failed window still places the documents its answer listed validly
    lw = by_judge(rows, "lw2")
    for q in pool.pools:
        n_failed = sum(r["status"] == "failed" for r in lw if r["query_id"] == q)
        assert n_failed in (0, 1)   # the renumbered last label is the one document lost
    # groupwise: in a failed group only the mislabelled document fails
    gw = by_judge(rows, "gw2")
    for gid in {(r["query_id"], r["group_id"]) for r in gw}:
        grp = [r for r in gw if (r["query_id"], r["group_id"]) == gid]
        assert sum(r["status"] == "failed" for r in grp) in (0, 1)
    # fusion still labels every pair (each was ok for at least one judge) and says so
    L, rep = fuse_labels(JUDGMENTS.from_records(rows))
    assert rep.labelled + len(rep.unlabelled) == pool.n_pairs
    assert rep.partially_judged > 0


def _stage_inputs(tmp_path, pool) -> dict[str, str]:
    """The judge stage's inputs as files: candidates (pool order), documents, mined queries."""
    from data_schemas import CANDIDATES, QUERIES
    recs = [{"query_id": q, "doc_id": d, "rank": i, "fused_score": 1.0 / i, "bm25_score": None, "bm25_rank": None,
             "dense_score": None, "dense_rank": None, "fusion": "minmax", "pool": "top"}
            for q, dids in pool.pools.items() for i, d in enumerate(dids, 1)]
    CANDIDATES.write(CANDIDATES.from_records(recs), tmp_path / "cand.parquet")
    DOCUMENTS.write(DOCUMENTS.from_records([{"doc_id": k, "title": None, "text": v, "collection": "t"}
                                            for k, v in pool.docs.items()]), tmp_path / "docs.parquet")
    QUERIES.write(QUERIES.from_records([{"query_id": q, "text": t, "collection": "t", "split": "test",
                                         "source": "existing", "decision": "kept"} for q, t in pool.queries.items()]),
                  tmp_path / "queries.parquet")
    return {"candidates": str(tmp_path / "cand.parquet"), "documents": str(tmp_path / "docs.parquet"),
            "mined_queries": str(tmp_path / "queries.parquet")}


def test_cli_dry_run_judge_and_fuse(tmp_path, server, small_pool, capsys):
    """`grouprank judge --dry-run`, `grouprank judge`, `grouprank fuse-labels`, fed from files."""
    from grouprank.cli import main
    pool, _ = small_pool
    inputs = _stage_inputs(tmp_path, pool)
    feed = [a for k, v in inputs.items() for a in (f"--{k.replace('_', '-')}", v)]
    cfg = make_cfg(tmp_path, server.base_url, specs=[JudgeSpec(id="pw", kind="pointwise"),
                                                     JudgeSpec(id="lw", kind="listwise")])
    conf = str(tmp_path / "cfg.json")
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    server.reset()
    assert main(["judge", "--config", conf, *feed, "--dry-run"]) == 0
    est = json.loads(open(json.loads(capsys.readouterr().out)["outputs"]["estimate"]).read())
    assert est["judges"]["pw"]["calls"] == 24 and est["judges"]["lw"]["calls"] == 3
    assert est["total"]["prompt_tokens"] > 0 and server.stats(detail=False)["requests"] == 0
    assert main(["judge", "--config", conf, *feed]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stats"]["rows"] == 48 and out["stats"]["pw.pairs_failed"] == 0
    J = JUDGMENTS.read(out["outputs"]["judgments"])
    assert J.num_rows == 48
    assert main(["fuse-labels", "--config", conf, "--judgments", out["outputs"]["judgments"]]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["stats"]["labelled"] == 24 and rep["stats"]["method"] == "rank"
    assert rep["stats"]["weight.pw"] == rep["stats"]["weight.lw"] == 0.5
    L = LABELS.read(rep["outputs"]["labels"])
    assert sorted(set(L.column("grade").to_pylist())) <= [0, 1, 2, 3]
    # a second dry run sees the answers in the cache: nothing left to pay for
    assert main(["judge", "--config", conf, *feed, "--dry-run", "--refresh"]) == 0
    est2 = json.loads(open(json.loads(capsys.readouterr().out)["outputs"]["estimate"]).read())
    assert est2["total"]["calls"] == 0


def test_stage_contract_judge_and_fuse(tmp_path, server, small_pool):
    """The `judge` and `fuse` stages run by the executor: Parquet in, Parquet out, plain-number stats."""
    from grouprank.executor import run_stage, stage
    pool, _ = small_pool
    inputs = _stage_inputs(tmp_path, pool)
    cfg = make_cfg(tmp_path, server.base_url, specs=[JudgeSpec(id="gw", kind="groupwise", group_size=4)])
    cfg.judges.dry_run = True
    est = run_stage(stage("judge"), cfg, inputs)
    assert est["stats"]["gw.est_calls"] == 6 and set(est["outputs"]) == {"estimate"}
    cfg.judges.dry_run = False
    seen = []
    res = run_stage(stage("judge"), cfg, inputs, progress=lambda part, done, total: seen.append((part, done, total)))
    assert res["stats"]["rows"] == 24 and res["stats"]["failed"] == 0 and seen[-1] == ("gw", 6, 6)  # in requests
    assert all(isinstance(v, (int, float, str)) for v in res["stats"].values())
    fz = run_stage(stage("fuse"), cfg, {"judgments": res["outputs"]["judgments"]})
    assert fz["stats"]["labelled"] == 24 and fz["stats"]["method"] == "single"
    assert LABELS.read(fz["outputs"]["labels"]).num_rows == 24
