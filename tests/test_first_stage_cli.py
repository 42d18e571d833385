"""`grouprank retrieve` end to end on a tiny BEIR-format corpus with the real default encoder."""
import json

import pytest

from data_schemas import CANDIDATES
from grouprank.cli import main
from tests.support.hash_encoder import toy_documents


@pytest.fixture()
def tiny_beir(tmp_path):
    root = tmp_path / "tiny"
    (root / "qrels").mkdir(parents=True)
    docs = toy_documents(40).to_pylist()
    with open(root / "corpus.jsonl", "w") as f:
        for d in docs:
            f.write(json.dumps({"_id": d["doc_id"], "title": d["title"], "text": d["text"]}) + "\n")
    queries = {"q1": "protein aggregation and chaperones", "q2": "vitamin and bone calcium",
               "q3": "heart blood pressure"}
    with open(root / "queries.jsonl", "w") as f:
        for q, t in queries.items():
            f.write(json.dumps({"_id": q, "text": t}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0000\t1\nq2\td0001\t1\nq3\td0003\t1\n")
    return root


def test_retrieve_cli_smoke(tiny_beir, tmp_path, capsys):
    wd = tmp_path / "work"
    args = ["retrieve", "--work-dir", str(wd), "--set", "data.collection=tiny", "--set", "data.format=beir",
            "--set", f"data.path={tiny_beir}", "--set", "retrieval.depth=20", "--set", "retrieval.pool_top=5",
            "--set", "retrieval.pool_sampled=5", "--set", "retrieval.pool_sample_from=[6,20]",
            "--split", "test"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    stats = summary["stats"]
    assert stats["queries"] == 3 and stats["candidates"] == 30
    assert not stats["reused.bm25"] and not stats["reused.embeddings"]
    out = wd / "retrieve"
    assert summary["outputs"]["candidates"] == str(out / "candidates.parquet")
    cands = CANDIDATES.read(out / "candidates.parquet").to_pandas()
    assert (cands.groupby("query_id").size() == 10).all()
    assert set(cands["pool"]) == {"top", "sampled"} and cands[cands["pool"] == "sampled"]["rank"].between(6, 20).all()
    top1 = cands[cands["rank"] == 1].set_index("query_id")["doc_id"].to_dict()
    assert top1["q1"] in {f"d{i:04d}" for i in range(0, 40, 6)}           # a protein document
    run = (out / "run.trec").read_text().splitlines()
    assert len(run) == 60 and run[0].split()[1] == "Q0"
    assert len((out / "candidates.trec").read_text().splitlines()) == 30
    assert json.loads((out / "retrieval_report.json").read_text())["queries"] == 3
    # unchanged: the finished stage is reused as it is
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "cached"
    # forced rerun: every persisted index is reused and the same candidates are written
    assert main(args + ["--refresh"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["state"] == "ran"
    assert again["stats"]["reused.bm25"] and again["stats"]["reused.embeddings"]
    assert CANDIDATES.read(out / "candidates.parquet").to_pandas().equals(cands)


def test_stage_retrieves_for_kept_queries_only(tiny_beir, tmp_path):
    """The retrieve stage's logic on tables: only mined queries with decision "kept" are retrieved for."""
    from data_schemas import QUERIES
    from grouprank.collections import load_collection
    from grouprank.config import RunConfig
    from grouprank.first_stage.stage import kept, retrieve_and_pool
    from tests.support.hash_encoder import HashEncoder
    coll = load_collection("tiny", format="beir", path=str(tiny_beir))
    q = coll.queries.to_pylist()
    q[1]["decision"] = "duplicate"        # dropped by mining: not retrieved for
    cfg = RunConfig(work_dir=str(tmp_path / "w"), retrieval={"depth": 15})
    (tmp_path / "out").mkdir()
    res = retrieve_and_pool(cfg, coll.documents, kept(QUERIES.from_records(q)), tmp_path / "out",
                            encoder=HashEncoder())
    assert set(res.outputs) == {"candidates", "pool_run", "run", "run_bm25", "run_dense", "retrieval_report"}
    c = res.outputs["candidates"].table
    assert sorted(set(c["query_id"].to_pylist())) == ["q1", "q3"]
    assert res.stats["queries"] == 2 and res.stats["candidates"] == 2 * 15
    assert "timings_s" not in res.outputs["candidates"].extra["report"]  # reruns write identical bytes


def test_retrieve_cli_help():
    with pytest.raises(SystemExit) as e:
        main(["retrieve", "--help"])
    assert e.value.code == 0
