"""`grouprank rerank` end to end: a TREC run of real DL19 queries, reranked through the
project's LLM client against the local OpenAI-compatible server, written as a TREC run, with the
per-query cost report and nDCG@10."""
import json
from pathlib import Path

import pytest

from grouprank.cli import main


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    from grouprank.collections import load_collection
    coll = load_collection("trec_dl19_passage")
    q = coll.qrels.to_pandas()
    qids = sorted(q["query_id"].unique())[:2]
    p = tmp_path_factory.mktemp("run") / "first.trec"
    lines = []
    for qid in qids:
        docs = sorted(q[q["query_id"] == qid]["doc_id"])[:12]
        lines += [f"{qid} Q0 {d} {i} {12 - i}.0 bm25" for i, d in enumerate(docs, 1)]
    p.write_text("\n".join(lines) + "\n")
    return p, qids


@pytest.mark.parametrize("mode,calls", [("groupwise", 2), ("pointwise", 12), ("listwise", 1)])
def test_rerank_cli_through_local_server(run_file, tmp_path, mode, calls):
    from tests.support.fake_openai_server import start_local_server
    path, qids = run_file
    here = str(Path(__file__).resolve().parent)
    out, rep = tmp_path / "out.trec", tmp_path / "rep.json"
    with start_local_server("test_reranker_inference:respond", pythonpath=[here]) as srv:
        rc = main(["rerank", "--run", str(path), "--collection", "trec_dl19_passage", "--out", str(out),
                   "--mode", mode, "--base-url", srv.base_url, "--group-size", "6", "--report", str(rep),
                   "--eval", "--work-dir", str(tmp_path), "--set", "rerank.window=12",
                   # an endpoint, not the CPU policy: without its preset layer (top 10 of the 12 otherwise)
                   "--set", "reranker.preset=null"])
    assert rc == 0
    rows = [line.split() for line in out.read_text().splitlines()]
    assert len(rows) == 24 and {r[0] for r in rows} == set(qids)
    assert all(r[5] == f"grouprank-{mode}" for r in rows)
    report = json.loads(rep.read_text())
    for q in qids:
        assert report["per_query"][q]["calls"] == calls
        assert report["per_query"][q]["prompt_tokens"] > 0
    # the reported nDCG@10 is ir-measures' on the run written to --out, against the collection's qrels
    import pandas as pd
    from grouprank.collections import load_collection
    from grouprank.evaluation.metrics import evaluate
    qrels = load_collection("trec_dl19_passage").qrels.to_pandas()[["query_id", "doc_id", "grade"]]
    run = pd.DataFrame({"query_id": [r[0] for r in rows], "doc_id": [r[2] for r in rows],
                        "score": [float(r[4]) for r in rows]})
    want = evaluate(run, qrels[qrels["query_id"].isin(qids)], measures=("nDCG@10",))["nDCG@10"]
    assert report["summary"]["eval"]["reranked"]["nDCG@10"] == pytest.approx(want, abs=1e-6)


def test_rerank_cli_errors_are_one_line(tmp_path, capsys):
    rc = main(["rerank", "--run", str(tmp_path / "missing.trec"), "--out", str(tmp_path / "o.trec"),
               "--collection", "trec_dl19_passage", "--base-url", "http://127.0.0.1:9/v1"])
    assert rc == 2
    assert "missing.trec" in capsys.readouterr().err
