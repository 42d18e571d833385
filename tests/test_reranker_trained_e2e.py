"""End to end with the real CPU policy: the train_reranker stage trains SmolLM2-135M-Instruct (from the
bundled GGUF) on Cranfield groups, then the evaluate stage reranks the first stage's candidates with
the saved checkpoint (transformers backend) and scores it next to the first stage on the same
queries. Small sizes: a few examples, one SFT and one GRPO step, two reranked queries."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pytest

from data_schemas import DOCUMENTS, METRICS, QRELS, QUERIES, RUNS
from grouprank.collections import load_collection
from grouprank.config import RunConfig
from grouprank.stage import StageContext

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytestmark = pytest.mark.timeout(600)

SMALL = {"reranker.max_train_examples": 4, "reranker.sft_epochs": 1.0, "reranker.grpo_steps": 1,
         "reranker.num_generations": 2, "reranker.per_device_batch_size": 2, "reranker.max_completion_length": 24,
         "reranker.heldout_max_examples": 2, "reranker.heldout_fraction": 0.3, "reranker.train_doc_chars": 60,
         "reranker.require_grpo_update": False, "reranker.train_top_layers": 2,
         # inference: 2 queries x top 6 in groups of 3
         "evaluation.rerank_max_queries": 2, "rerank.top": 6, "rerank.group_size": 3, "rerank.max_tokens": 32,
         "rerank.doc_chars": 60,
         "retrieval.max_seq_length": 32, "retrieval.batch_size": 64, "data.collection": "cranfield"}


@pytest.fixture(scope="module")
def cran():
    return load_collection("cranfield")


@pytest.fixture(scope="module")
def trained(cran, tmp_path_factory):
    import torch
    torch.set_num_threads(2)
    from grouprank.reranker.data import groups_from_qrels
    from grouprank.reranker.stage import run
    work = tmp_path_factory.mktemp("work")
    qids = sorted(set(cran.qrels["query_id"].to_pylist()))[:6]
    rl, sft = groups_from_qrels(cran, group_sizes=(3,), groups_per_query=1, max_doc_chars=400, query_ids=qids, seed=3)
    cfg = RunConfig.load(None, {"work_dir": str(work), **SMALL})
    out = work / "train_reranker"
    out.mkdir()
    res = run({"reranker_sft": pa.Table.from_pylist(sft), "reranker_rl": pa.Table.from_pylist(rl)}, cfg,
              StageContext(out_dir=out, work_dir=work))
    return cfg, res


def test_train_reranker_stage_on_smollm2(trained):
    _, res = trained
    st = res.stats
    assert st["policy"] == "smollm2" and st["preset"] == "smollm2-cpu"
    assert 130e6 < st["params"] < 140e6 and 0 < st["trainable_params"] < st["params"] / 5
    assert st["sft_rows_trained"] == 4 and st["grpo_steps"] == 1 and st["heldout_examples"] == 2
    model = Path(res.outputs["reranker_model"])
    assert (model / "config.json").exists() and (model / "tokenizer.json").exists()
    summary = json.loads(Path(res.outputs["reranker_summary"]).read_text())
    cfg = summary["reranker_config"]
    # the configuration's values win over the preset; the preset fills the rest
    rr = summary["rerank_config"]
    assert (cfg["grpo_steps"], rr["group_size"], cfg["train_top_layers"], cfg["bf16"]) == (1, 3, 2, True)
    assert rr["dtype"] == "bfloat16" and cfg["beta_kl"] == 0.0


def test_evaluate_stage_reranks_with_the_trained_checkpoint(trained, cran, tmp_path):
    from grouprank.evaluation.metrics import evaluate
    from grouprank.evaluation.stage import STAGE
    from grouprank.executor import run_stage
    from grouprank.first_stage.fusion import minmax
    cfg, res = trained
    cfg = cfg.model_copy(update={"work_dir": str(tmp_path / "eval")})
    files = {"documents": DOCUMENTS.write(cran.documents, tmp_path / "documents.parquet"),
             "queries": QUERIES.write(cran.queries, tmp_path / "queries.parquet"),
             "qrels": QRELS.write(cran.qrels, tmp_path / "qrels.parquet"),
             "reranker_model": res.outputs["reranker_model"]}
    out = run_stage(STAGE, cfg, files)
    st = out["stats"]
    assert st["rerank_trained.generations"] == 2 * 2                       # 2 queries x ceil(6/3) groups, one pass
    metrics = METRICS.read(out["outputs"]["metrics"]).to_pandas()
    nq = dict(zip(metrics["system"], metrics["n_queries"]))
    assert nq["hybrid-minmax+trained-groupwise-rerank"] == 2 == nq["hybrid-minmax@reranked-queries"]
    runs = RUNS.read(out["outputs"]["runs"]).to_pandas()
    rr = runs[runs["system"] == "hybrid-minmax+trained-groupwise-rerank"]
    hyb = runs[runs["system"] == "hybrid-minmax"]
    assert rr["query_id"].nunique() == 2 and len(rr) == 12
    # final = 0.6 * (0-10 group score)/10 + 0.4 * minmax(first stage over the reranked top 6)
    for q, sub in rr.groupby("query_id"):
        top = hyb[hyb["query_id"] == q].sort_values("score", ascending=False).head(6)
        first = dict(zip(top["doc_id"], minmax(top["score"].tolist())))
        assert set(sub["doc_id"]) == set(first)
        for d, s in zip(sub["doc_id"], sub["score"]):
            g10 = (s - 0.4 * first[d]) / 0.6 * 10
            assert abs(g10 - round(g10)) < 1e-6 and 0 <= round(g10) <= 10
    # the stage's numbers are ir-measures' on its own runs, first stage and reranker on the same queries
    qrels = cran.qrels_for("test").to_pandas()
    qr = qrels[qrels["query_id"].isin(set(rr["query_id"]))]
    assert st["hybrid-minmax+trained-groupwise-rerank.nDCG@10"] == pytest.approx(
        evaluate(rr[["query_id", "doc_id", "score"]], qr, ["nDCG@10"])["nDCG@10"], abs=1e-4)
    sub_h = runs[runs["system"] == "hybrid-minmax@reranked-queries"]
    assert set(sub_h["query_id"]) == set(rr["query_id"])
    report = json.loads(open(out["outputs"]["eval_report"]).read())
    assert report["rerank_trained"]["reranker"].startswith("trained:")
