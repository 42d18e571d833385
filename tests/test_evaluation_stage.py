"""The `evaluate` stage on Cranfield (real BM25, all-MiniLM-L6-v2, ir-measures), reranking through a
real OpenAI-compatible HTTP server on 127.0.0.1 (the local judge answering GroupRank prompts)."""
from __future__ import annotations

import json

import pytest

from data_schemas import DOCUMENTS, METRICS, QRELS, QUERIES, RUNS
from grouprank.collections import load_collection
from grouprank.config import RunConfig
from grouprank.evaluation.metrics import evaluate
from grouprank.evaluation.stage import STAGE
from grouprank.executor import run_stage


@pytest.fixture(scope="module")
def cran():
    return load_collection("cranfield")


def _collection_files(cran, d):
    return {"documents": DOCUMENTS.write(cran.documents, d / "documents.parquet"),
            "queries": QUERIES.write(cran.queries, d / "queries.parquet"),
            "qrels": QRELS.write(cran.qrels, d / "qrels.parquet")}


def _cfg(work, endpoints=()):
    return RunConfig.load(None, {
        "work_dir": str(work), "data.collection": "cranfield",
        "retrieval.max_seq_length": 32, "retrieval.batch_size": 64,
        "llm.endpoints": [dict(e) for e in endpoints],
        "rerank.top": 10, "rerank.group_size": 5,
        "evaluation.rerank_max_queries": 3})


def test_evaluate_stage_systems_exclusion_and_llm_rerank(tmp_path, cran):
    from grouprank.first_stage.dense import default_model_path
    from tests.support.fake_openai_server import start_local_server

    # three test queries were "mined" for training: the evaluation leaves them out
    mined = cran.queries_for("test").slice(0, 3)
    mined_path = QUERIES.write(mined, tmp_path / "mined.parquet")
    with start_local_server(responder="tests.support.judge_responder:respond",
                            env={"GROUPRANK_JUDGE_CORPUS": "cranfield", "GROUPRANK_LOCAL_E5": "0"}) as srv:
        cfg = _cfg(tmp_path / "work", [{"name": "local", "base_url": srv.base_url, "model": "local",
                                        "max_concurrency": 4, "timeout_s": 30}])
        res = run_stage(STAGE, cfg, {**_collection_files(cran, tmp_path), "mined_queries": mined_path,
                                     "retriever_model": default_model_path()})
        requests = srv.stats(detail=False)["requests"]

    st = res["stats"]
    judged = len(set(cran.qrels_for("test")["query_id"].to_pylist()))
    assert st["excluded_training_queries"] == 3 and st["queries"] == judged - 3
    metrics = METRICS.read(res["outputs"]["metrics"]).to_pandas()
    systems = set(metrics["system"])
    assert {"bm25", "dense", "hybrid-minmax", "dense-finetuned", "hybrid-minmax-finetuned",
            "hybrid-minmax+groupwise-rerank", "hybrid-minmax@reranked-queries"} == systems, systems
    assert set(metrics[metrics["system"] == "hybrid-minmax+groupwise-rerank"]["n_queries"]) == {3}
    runs = RUNS.read(res["outputs"]["runs"]).to_pandas()
    assert not set(mined["query_id"].to_pylist()) & set(runs["query_id"])
    # the stage's numbers are ir-measures' numbers for its own runs
    qrels = cran.qrels_for("test").to_pandas()
    bm = runs[runs["system"] == "bm25"][["query_id", "doc_id", "score"]]
    direct = evaluate(bm, qrels[qrels["query_id"].isin(set(bm["query_id"]))], ["nDCG@10"])["nDCG@10"]
    assert st["bm25.nDCG@10"] == pytest.approx(direct, abs=1e-4)
    assert 0.30 < st["bm25.nDCG@10"] < 0.45            # Cranfield BM25 (bench/retrieval.py: 0.365)
    assert st["hybrid-minmax.nDCG@10"] > st["bm25.nDCG@10"]
    # the same model given as the "fine-tuned" retriever reproduces the base dense run exactly
    assert st["dense-finetuned.nDCG@10"] == pytest.approx(st["dense.nDCG@10"], abs=1e-9)
    # 3 queries x top 10 in groups of 5 = 6 GroupRank calls through HTTP, all answered
    assert st["rerank.calls"] == 6 == requests and st["rerank.failed"] == 0
    rr = runs[runs["system"] == "hybrid-minmax+groupwise-rerank"]
    assert rr["query_id"].nunique() == 3 and len(rr) == 30
    report = json.loads(open(res["outputs"]["eval_report"]).read())
    assert report["rerank"]["reranker"] == "llm:local" and report["split"] == "test"
    # each system's own query count; every system against the first stage, paired on shared queries
    nq = judged - 3
    assert report["system_queries"]["hybrid-minmax+groupwise-rerank"] == 3 and report["system_queries"]["bm25"] == nq
    sig = report["significance"]
    assert sig["baseline"] == "hybrid-minmax" and "hybrid-minmax" not in sig["systems"]
    assert sig["systems"]["hybrid-minmax+groupwise-rerank"]["nDCG@10"]["n"] == 3
    b = sig["systems"]["bm25"]["nDCG@10"]
    assert b["n"] == nq and b["mean_diff"] == pytest.approx(st["bm25.nDCG@10"] - st["hybrid-minmax.nDCG@10"], abs=1e-4)
    assert 0 <= b["p_ttest"] <= 1 and b["ci95"][0] <= b["mean_diff"] <= b["ci95"][1]
    assert sig["systems"]["dense-finetuned"]["nDCG@10"]["p_ttest"] is not None
    assert st["bm25.nDCG@10.p_vs_hybrid-minmax"] == b["p_ttest"]


def test_evaluate_stage_refuses_a_split_without_judged_queries(tmp_path, cran):
    from grouprank.errors import UserError
    cfg = _cfg(tmp_path)
    cfg.evaluation.split = "train"  # Cranfield has test queries only
    with pytest.raises(UserError, match="no judged queries in split 'train'"):
        run_stage(STAGE, cfg, _collection_files(cran, tmp_path))
