"""BRIGHT's excluded ids never appear in a scored run: the retrieve stage's runs and pool (fused, BM25,
dense) and `grouprank evaluate --run` drop them before writing / scoring."""
import json

import pytest

from grouprank.cli import main

TOPICS = ["solar panel efficiency in cold weather", "bread baking with sourdough starter",
          "migration of monarch butterflies", "deep sea hydrothermal vents", "history of the printing press"]


@pytest.fixture()
def bright(tmp_path):
    root = tmp_path / "mybright"
    root.mkdir()
    docs = []
    for i in range(20):
        docs.append({"id": f"d{i}", "content": f"{TOPICS[i % 5]} notes part {i}"})
    # d0 and d20 repeat q1's words exactly: without exclusion they are its top documents
    docs[0]["content"] = "solar panel efficiency cold weather solar panel efficiency"
    docs.append({"id": "d20", "content": "solar panel efficiency in cold weather, cold weather solar panels"})
    with open(root / "documents.jsonl", "w") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")
    ex = [{"id": "q1", "query": "solar panel efficiency in cold weather", "gold_ids": ["d5"],
           "excluded_ids": ["d0", "d20"]},
          {"id": "q2", "query": "sourdough starter bread", "gold_ids": ["d1"], "excluded_ids": ["N/A"]}]
    with open(root / "examples.jsonl", "w") as f:
        for e in ex:
            f.write(json.dumps(e) + "\n")
    return root


def _retrieve(cfg, coll, out, excluded=None):
    from grouprank.first_stage.stage import retrieve_and_pool
    from tests.support.hash_encoder import HashEncoder
    out.mkdir()
    return retrieve_and_pool(cfg, coll.documents, coll.queries, out, encoder=HashEncoder(), excluded=excluded)


def _pairs(path):
    return {(ln.split()[0], ln.split()[2]) for ln in path.read_text().splitlines()}


def test_retrieve_stage_runs_and_pool_never_hold_excluded_ids(bright, tmp_path):
    from grouprank.collections import excluded_from_config, load_collection
    from grouprank.config import RunConfig
    coll = load_collection("mybright", format="bright", path=str(bright))
    cfg = RunConfig(work_dir=str(tmp_path / "w"), data={"collection": "mybright", "format": "bright",
                                                           "path": str(bright)},
                    retrieval={"depth": 15, "pool_top": 5, "pool_sampled": 5, "pool_sample_from": [6, 15]})
    assert excluded_from_config(cfg) == {"q1": {"d0", "d20"}}
    # the same retrieval without the exclusion: the excluded documents are q1's best matches
    plain = _retrieve(cfg, coll, tmp_path / "plain", excluded={})
    top = plain.outputs["candidates"].table.to_pandas()
    assert {"d0", "d20"} <= set(top[(top.query_id == "q1") & (top["rank"] <= 3)].doc_id)
    # the stage as configured (excluded ids from the BRIGHT folder)
    res = _retrieve(cfg, coll, tmp_path / "ex")
    assert res.stats["excluded_removed"] >= 2
    bad = {("q1", "d0"), ("q1", "d20")}
    for name in ("run", "run_bm25", "run_dense", "pool_run"):
        pairs = _pairs(res.outputs[name])
        assert pairs and not (pairs & bad), name
    c = res.outputs["candidates"].table.to_pandas()
    assert not ({(q, d) for q, d in zip(c.query_id, c.doc_id)} & bad)
    assert "d5" in set(c[c.query_id == "q1"].doc_id)


def test_evaluate_removes_excluded_ids_before_scoring(bright, tmp_path, capsys):
    run = tmp_path / "mine.trec"
    # q1: the excluded d0 and d20 first, then the gold d5: scored as if d5 were first
    run.write_text("q1 Q0 d0 1 9.0 x\nq1 Q0 d20 2 8.0 x\nq1 Q0 d5 3 7.0 x\nq2 Q0 d1 1 5.0 x\n")
    src = ["--format", "bright", "--path", str(bright), "--work-dir", str(tmp_path / "w")]
    assert main(["evaluate", *src, "--run", f"mine={run}", "--out-dir", str(tmp_path / "ev")]) == 0
    s = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert s["excluded_removed"] == {"mine": 2}
    assert s["systems"]["mine"]["nDCG@10"] == pytest.approx(1.0)
    assert s["systems"]["mine"]["RR@10"] == pytest.approx(1.0)
    capsys.readouterr()
    # a collection without excluded ids scores the same run as it is: d5 at rank 3
    from grouprank.evaluation.runs import read_run, score_runs
    import pandas as pd
    q = pd.DataFrame({"query_id": ["q1", "q2"], "doc_id": ["d5", "d1"], "grade": [1, 1]})
    s2, _ = score_runs({"mine": read_run(run)}, q, measures=["RR@10"])
    assert s2["systems"]["mine"]["RR@10"] == pytest.approx((1 / 3 + 1) / 2, abs=1e-4)


def test_train_retriever_runs_and_metrics_never_hold_excluded_ids(bright, tmp_path):
    """Issue 27, item 4: the retriever's before/after evaluation (DenseEvaluator, as train_retriever
    builds it from the configuration) drops BRIGHT's excluded ids before a run is written or scored,
    and still returns `depth` documents per query."""
    import pandas as pd

    from grouprank.collections import excluded_from_config, load_collection
    from grouprank.config import RunConfig
    from grouprank.retriever_training.evaluate import DenseEvaluator
    coll = load_collection("mybright", format="bright", path=str(bright))
    cfg = RunConfig(work_dir=str(tmp_path / "w"), data={"collection": "mybright", "format": "bright",
                                                           "path": str(bright)})
    excluded = excluded_from_config(cfg)
    qrels = pd.DataFrame({"query_id": ["q1", "q2"], "doc_id": ["d5", "d1"], "grade": [1, 1]})
    texts = {"q1": "solar panel efficiency in cold weather", "q2": "sourdough starter bread"}
    plain = DenseEvaluator(coll.documents, texts, qrels, max_seq_length=64, depth=5)
    run0 = plain.run("all-MiniLM-L6-v2")
    top = set(run0[run0.query_id == "q1"].doc_id)
    assert {"d0", "d20"} <= top, "the excluded documents are q1's best matches without the exclusion"
    ev = DenseEvaluator(coll.documents, texts, qrels, max_seq_length=64, depth=5, excluded=excluded)
    run = ev.run("all-MiniLM-L6-v2")
    pairs = set(zip(run.query_id, run.doc_id))
    assert not (pairs & {("q1", "d0"), ("q1", "d20")})
    assert run.groupby("query_id").size().to_dict() == {"q1": 5, "q2": 5}
    assert ev.last["excluded_removed"] == 2
    m_plain, m_ex = plain.evaluate("all-MiniLM-L6-v2"), ev.evaluate("all-MiniLM-L6-v2")
    assert m_ex["nDCG@10"] > m_plain["nDCG@10"]  # d5 moves up once d0 and d20 are gone
