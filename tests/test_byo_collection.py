"""Bring your own collection: a BEIR folder with only a `test` split (a slice of SciFact's test split,
re-graded 0-2, one query whose labels are all 0) through `collections stats`, `retrieve`, `judge`
(the local judge), `evaluate --run` and both benches; BRIGHT excluded ids never in a scored run; config
mistakes as one line."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from grouprank.cli import main

ROOT = Path(__file__).resolve().parent.parent
N_QUERIES = 6


@pytest.fixture(scope="module")
def beir_test_only(tmp_path_factory):
    """A BEIR folder built from SciFact's test split: 6 queries, their cited abstracts (grade 2) and 80
    other abstracts; query 1 gets one grade-1 document; the last query is judged with grade 0 only."""
    from grouprank.collections import load_collection
    c = load_collection("scifact")
    root = tmp_path_factory.mktemp("byo") / "mybeir"
    (root / "qrels").mkdir(parents=True)
    qr = c.qrels_for("test").to_pandas()
    qids = sorted(qr.query_id.unique())[:N_QUERIES]
    sub = qr[qr.query_id.isin(qids)]
    gold = list(dict.fromkeys(sub.doc_id))
    docs = c.documents.to_pandas()
    extra = [d for d in docs.doc_id[:80] if d not in set(gold)]
    d = docs.set_index("doc_id").loc[gold + extra].reset_index()
    with open(root / "corpus.jsonl", "w") as f:
        for r in d.itertuples():
            f.write(json.dumps({"_id": r.doc_id, "title": r.title or "", "text": r.text}) + "\n")
    qt = c.queries.to_pandas().set_index("query_id")
    with open(root / "queries.jsonl", "w") as f:
        for q in qids:
            f.write(json.dumps({"_id": q, "text": qt.loc[q, "text"]}) + "\n")
    last = qids[-1]
    lines = [f"{r.query_id}\t{r.doc_id}\t2" for r in sub.itertuples() if r.query_id != last]
    lines += [f"{qids[0]}\t{extra[0]}\t1", f"{last}\t{extra[1]}\t0", f"{last}\t{extra[2]}\t0"]
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(lines) + "\n")
    return root, qids, len(lines)


SMALL = ["--set", "retrieval.depth=30", "--set", "retrieval.pool_top=5", "--set", "retrieval.pool_sampled=5",
         "--set", "retrieval.pool_sample_from=[6,30]", "--set", "queries.auto_holdout_fraction=0"]


def test_test_only_beir_folder_through_stats_retrieve_judge_evaluate(beir_test_only, tmp_path, capsys):
    root, qids, n_qrels = beir_test_only
    src = ["--format", "beir", "--path", str(root)]
    # collections stats: the split there is, and the defaults taken from it
    assert main(["collections", "stats", *src, "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert list(s["splits"]) == ["test"] and s["splits"]["test"]["judged_queries"] == N_QUERIES
    assert s["qrels"] == n_qrels and (s["grades"]["0"], s["grades"]["1"]) == (2, 1) and s["grades"]["2"] >= 5
    assert s["default_splits"] == {"mine": "['test'] minus a seeded 20% held out", "guard": "the held-out 20%",
                                   "evaluate": "the held-out 20%"}
    # retrieve: no train split -> the judged queries are mined (no "no queries to retrieve"; all of them
    # with auto_holdout_fraction 0, as SMALL sets: these runs are scored on every judged query), the split recorded
    wd = tmp_path / "work"
    assert main(["retrieve", *src, "--work-dir", str(wd), *SMALL]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["stats"]["queries"] == N_QUERIES and rec["stats"]["splits"] == "test"
    report = json.loads((wd / "retrieve" / "retrieval_report.json").read_text())
    assert report["splits"] == ["test"] and report["query_source"] == "mined_queries"
    runs = {n: (wd / "retrieve" / f"{n}.trec").read_text().splitlines() for n in ("run", "run_bm25", "run_dense")}
    for name, lines in runs.items():
        assert {ln.split()[0] for ln in lines} == set(qids), name
        assert lines[0].split()[5] == f"grouprank-{'minmax' if name == 'run' else name[4:]}"
    assert runs["run_bm25"] != runs["run_dense"]
    # judge with the offline local judge, on the retrieve stage's pools
    assert main(["judge", *src, "--work-dir", str(wd), *SMALL]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j["stats"]["queries"] == N_QUERIES and j["stats"]["pairs"] == N_QUERIES * 10 and j["stats"]["failed"] == 0
    # evaluate the pipeline's runs (the retrieve folder) against the qrels
    assert main(["evaluate", *src, "--work-dir", str(wd), "--run", str(wd / "retrieve"),
                 "--out-dir", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr()
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["split"] == "test" and summary["relevance_threshold"] == 1
    assert set(summary["systems"]) == {"run", "run_bm25", "run_dense"}
    assert summary["grade_scale"] == {"min": 0, "max": 2}
    assert summary["queries_without_relevant"] == 1 and summary["queries_without_relevant_ids"] == [qids[-1]]
    assert "1 without a relevant document" in out.out
    import pandas as pd
    pq = pd.read_csv(tmp_path / "ev" / "per_query.csv", dtype={"query_id": str})
    assert len(pq) == 3 * N_QUERIES and list(pq.columns) == ["system", "query_id", "nDCG@10", "R@100", "RR@10"]
    for system, vals in summary["systems"].items():  # the summary is the mean of the per-query rows
        assert pq[pq.system == system]["nDCG@10"].mean() == pytest.approx(vals["nDCG@10"], abs=1e-4)
    assert (pq[pq.query_id == qids[-1]][["nDCG@10", "R@100", "RR@10"]] == 0).all().all()
    assert 0.3 < summary["systems"]["run"]["nDCG@10"] <= 1.0


def _bench(args, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "HOME": str(Path.home())}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)


def test_both_benches_take_a_beir_folder(beir_test_only, tmp_path):
    root, qids, n_qrels = beir_test_only
    out = tmp_path / "retrieval.json"
    r = _bench(["bench/retrieval.py", "--format", "beir", "--path", str(root), "--out", str(out),
                "--work-dir", str(tmp_path / "bw"), "--no-encode-timing", "--no-overhead",
                "--quality-backend", "onnx-int8"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(out.read_text())
    assert rep["split"] == "test" and rep["n_queries"] == N_QUERIES  # every judged query, the all-0 one too
    assert rep["source"] == {"collection": "mybeir", "format": "beir", "path": str(root)}
    assert 0 < rep["systems"]["bm25"]["ndcg@10"] <= 1
    # SciFact abstracts: most are longer than MiniLM's 256-token window, and the report says so
    assert rep["long_texts"]["dense_over_window"] > rep["n_docs"] // 3 and rep["long_texts"]["dense_chunking"] == "none"
    out = tmp_path / "judge.json"
    r = _bench(["bench/judge_agreement.py", "--format", "beir", "--path", str(root), "--judge", "local",
                "--calibration", "crossfit", "--mpnet", "off", "--embed-cache", str(tmp_path / "emb.sqlite"),
                "--out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(out.read_text())
    assert rep["split"] == "test" and rep["grade_scale"] == 2
    # the grade scale follows the collection: a 0-2 collection never gets grade 3
    assert set(rep["judge_grade_counts"]) <= {"0", "1", "2"}
    assert rep["pairs"] == n_qrels  # the judged pool: every qrels pair


def test_bad_set_value_is_one_line_naming_key_value_and_allowed(tmp_path):
    r = subprocess.run([sys.executable, "-m", "grouprank.cli", "retrieve", "--work-dir", str(tmp_path),
                        "--set", "retrieval.fusion=bm25"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines == ["grouprank: error: retrieval.fusion = 'bm25' is not allowed; allowed values: 'minmax' or 'rrf'"]
    r = subprocess.run([sys.executable, "-m", "grouprank.cli", "retrieve", "--work-dir", str(tmp_path),
                        "--set", "retrieval.fusionn=rrf"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "unknown key 'retrieval.fusionn'" in r.stderr and "fusion," in r.stderr
    # the traceback only with --debug
    r = subprocess.run([sys.executable, "-m", "grouprank.cli", "--debug", "retrieve", "--work-dir", str(tmp_path),
                        "--set", "retrieval.fusion=bm25"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_every_option_has_help():
    from grouprank.cli import build_parser
    import argparse
    parser = build_parser()
    missing = []

    def walk(p, path):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    walk(sp, f"{path} {name}")
            elif a.option_strings and a.help is None:
                missing.append(f"{path} {a.option_strings[0]}")
    walk(parser, "grouprank")
    assert missing == []


def test_trec_folder_format(tmp_path, capsys):
    """--format trec: corpus + queries files and TREC qrels in one folder (also what jsonl/csv/parquet
    read when given a folder)."""
    root = tmp_path / "mytrec"
    root.mkdir()
    (root / "corpus.jsonl").write_text("".join(json.dumps({"doc_id": f"d{i}", "title": None, "text": f"text {i}"})
                                               + "\n" for i in range(5)))
    (root / "queries.jsonl").write_text(json.dumps({"query_id": "q1", "text": "text 3"}) + "\n")
    (root / "qrels.txt").write_text("q1 0 d3 2\nq1 0 d1 0\n")
    for fmt in ("trec", "jsonl"):
        assert main(["collections", "stats", "--format", fmt, "--path", str(root), "--json"]) == 0
        s = json.loads(capsys.readouterr().out)
        assert (s["collection"], s["documents"], s["queries"], s["qrels"]) == ("mytrec", 5, 1, 2)
        assert s["grades"] == {"0": 1, "2": 1} and s["default_splits"]["evaluate"] == "the held-out 20%"
    # a path without a format, and a format without a path: one clear line each
    assert main(["collections", "stats", "--path", str(root)]) == 2
    assert "say its format with --format" in capsys.readouterr().err
    assert main(["collections", "stats", "--format", "beir"]) == 2
    assert "--format beir needs --path" in capsys.readouterr().err
