"""Strict input validation (issue 18, items 3 and 4): each bad input is refused with file, line and
field, or becomes a quarantine row with quarantine on; never a silent acceptance or a traceback."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from grouprank.collections.formats import load_beir, load_tabular
from grouprank.collections.trec import read_trec_qrels, read_trec_run, write_trec_qrels, write_trec_run
from grouprank.errors import InputError


ONE = "query-id\tcorpus-id\tscore\nq1\td0\t1\n"


def beir(root: Path, corpus=None, queries=None, qrels: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    corpus = corpus if corpus is not None else [{"_id": f"d{i}", "title": "", "text": f"text {i}"} for i in range(3)]
    queries = queries if queries is not None else [{"_id": "q1", "text": "what"}, {"_id": "q2", "text": "why"}]
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / "test.tsv").write_text(qrels if qrels is not None else
                                             "query-id\tcorpus-id\tscore\nq1\td0\t1\nq2\td1\t2\n")
    return root


def refused(fn, *, file: str, record: str | None, field: str | None, says: str) -> InputError:
    with pytest.raises(InputError) as ei:
        fn()
    e = ei.value
    assert Path(e.file).name == file, str(e)
    assert (record is None and e.record is None) or (record is not None and record in str(e.record)), str(e)
    assert e.field == field, str(e)
    assert says in e.reason, str(e)
    return e


# --- grades ------------------------------------------------------------------------------------
def test_negative_grade_in_beir_qrels(tmp_path):
    root = beir(tmp_path / "b", qrels="query-id\tcorpus-id\tscore\nq1\td0\t1\nq2\td1\t-1\n")
    refused(lambda: load_beir(root), file="qrels", record="row 2", field="grade", says="negative grade -1")
    q: list = []
    c = load_beir(root, quarantine=q)
    assert c.qrels.num_rows == 1 and c.quarantine.num_rows == 1
    assert c.quarantine["field"].to_pylist() == ["grade"]


def test_negative_grade_in_trec_qrels(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"doc_id": "d1", "text": "x"}\n{"doc_id": "d2", "text": "y"}\n')
    (tmp_path / "q.jsonl").write_text('{"query_id": "q1", "text": "x"}\n')
    (tmp_path / "qrels.txt").write_text("q1 0 d1 1\nq1 0 d2 -2\n")
    refused(lambda: load_tabular(tmp_path / "c.jsonl", queries=tmp_path / "q.jsonl", qrels=tmp_path / "qrels.txt"),
            file="qrels.txt", record="line 2", field="grade", says="negative grade -2")
    with pytest.raises(InputError, match="line 2.*negative"):
        read_trec_qrels(tmp_path / "qrels.txt")


def test_twenty_digit_grade_is_an_error_not_an_overflow(tmp_path):
    root = beir(tmp_path / "b", qrels="query-id\tcorpus-id\tscore\nq1\td0\t99999999999999999999\n")
    refused(lambda: load_beir(root), file="qrels", record="row 1", field="grade", says="out of range")
    c = load_beir(root, quarantine=[])
    assert c.qrels.num_rows == 0 and c.quarantine.num_rows == 1


# --- run scores --------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "NaN"])
def test_non_finite_run_score(tmp_path, bad):
    p = tmp_path / "run.trec"
    p.write_text(f"q1 Q0 d1 1 3.5 sys\nq1 Q0 d2 2 {bad} sys\n")
    refused(lambda: read_trec_run(p), file="run.trec", record="line 2", field="score", says="not a finite number")


# --- empty and header-only files ---------------------------------------------------------------
@pytest.mark.parametrize("content", ["", "\n\n", "doc_id,text\n"])
def test_empty_or_header_only_corpus_is_blamed_on_the_corpus(tmp_path, content):
    corpus = tmp_path / ("c.csv" if "," in content else "c.jsonl")
    corpus.write_text(content)
    (tmp_path / "q.jsonl").write_text('{"query_id": "q1", "text": "x"}\n')
    (tmp_path / "qrels.txt").write_text("q1 0 d1 1\n")
    refused(lambda: load_tabular(corpus, queries=tmp_path / "q.jsonl", qrels=tmp_path / "qrels.txt"),
            file=corpus.name, record=None, field=None, says="no documents")


def test_empty_queries_qrels_and_run_files(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"doc_id": "d1", "text": "x"}\n')
    (tmp_path / "q.csv").write_text("query_id,text\n")
    (tmp_path / "q.jsonl").write_text('{"query_id": "q1", "text": "x"}\n')
    (tmp_path / "qrels.txt").write_text("\n")
    (tmp_path / "run.trec").write_text("")
    refused(lambda: load_tabular(tmp_path / "c.jsonl", queries=tmp_path / "q.csv"),
            file="q.csv", record=None, field=None, says="no queries")
    refused(lambda: load_tabular(tmp_path / "c.jsonl", queries=tmp_path / "q.jsonl", qrels=tmp_path / "qrels.txt"),
            file="qrels.txt", record=None, field=None, says="no judgments")
    refused(lambda: read_trec_run(tmp_path / "run.trec"), file="run.trec", record=None, field=None, says="no run lines")
    root = beir(tmp_path / "b", qrels="query-id\tcorpus-id\tscore\n")
    refused(lambda: load_beir(root), file="*.tsv", record=None, field=None, says="no judgments")


def test_all_records_quarantined_is_still_an_error(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"doc_id": {"x": 1}, "text": "x"}\n{"doc_id": "a b", "text": "y"}\n')
    q: list = []
    e = refused(lambda: load_tabular(tmp_path / "c.jsonl", quarantine=q), file="c.jsonl", record=None, field=None,
                says="no valid documents")
    assert "all 2 records" in e.reason and len(q) == 2


# --- byte-order marks ----------------------------------------------------------------------------
def test_bom_opening_a_file_is_dropped(tmp_path):
    p = tmp_path / "run.trec"
    p.write_bytes(b"\xef\xbb\xbfq1 Q0 d1 1 2.0 sys\nq1 Q0 d2 2 1.0 sys\n")
    assert set(read_trec_run(p)["query_id"].to_pylist()) == {"q1"}
    c = tmp_path / "c.csv"
    c.write_bytes("\ufeffdoc_id,text\nd1,hello\n".encode())
    assert load_tabular(c).documents["doc_id"].to_pylist() == ["d1"]


def test_bom_inside_an_id_is_refused(tmp_path):
    p = tmp_path / "run.trec"
    p.write_bytes("q1 Q0 d1 1 2.0 sys\n\ufeffq2 Q0 d2 1 1.0 sys\n".encode())
    refused(lambda: read_trec_run(p), file="run.trec", record="line 2", field="qid", says="byte-order mark")
    (tmp_path / "c.jsonl").write_text(json.dumps({"doc_id": "d\ufeff1", "text": "x"}) + "\n")
    refused(lambda: load_tabular(tmp_path / "c.jsonl"), file="c.jsonl", record="line 1", field="doc_id",
            says="byte-order mark")


# --- ids that would forge TREC lines -----------------------------------------------------------
@pytest.mark.parametrize("bad_id, says", [("d3\nq9 0 d1", "newline"), ("d 3", "space"), ("d\t3", "tab"),
                                          ("d\x003", "NUL"), ("d\u200b3", "zero width space")])
def test_ids_with_whitespace_or_control_characters(tmp_path, bad_id, says):
    root = beir(tmp_path / "b", corpus=[{"_id": "d0", "text": "a"}, {"_id": bad_id, "text": "b"}], qrels=ONE)
    refused(lambda: load_beir(root), file="corpus.jsonl", record="line 2", field="doc_id", says=says)
    c = load_beir(root, quarantine=[])
    assert c.documents["doc_id"].to_pylist() == ["d0"] and c.quarantine["field"].to_pylist() == ["doc_id"]


def test_id_with_a_space_in_beir_qrels(tmp_path):
    root = beir(tmp_path / "b", qrels="query-id\tcorpus-id\tscore\nq1\td0 x\t1\n")
    refused(lambda: load_beir(root), file="qrels", record="row 1", field="doc_id", says="space")


def test_query_id_with_a_newline(tmp_path):
    root = beir(tmp_path / "b", queries=[{"_id": "q1", "text": "a"}, {"_id": "q2\nq3", "text": "b"}])
    refused(lambda: load_beir(root), file="queries.jsonl", record="line 2", field="query_id", says="newline")


def test_writers_refuse_ids_that_would_forge_lines(tmp_path):
    qrels = pa.table({"query_id": ["q1"], "doc_id": ["d3\nq9 0 d1"], "grade": [1]})
    refused(lambda: write_trec_qrels(qrels, tmp_path / "x.qrels"), file="x.qrels", record=None, field="doc_id",
            says="newline")
    assert not (tmp_path / "x.qrels").exists()
    run = pa.table({"query_id": ["q 1"], "doc_id": ["d1"], "rank": [1], "score": [1.0], "system": ["s"]})
    refused(lambda: write_trec_run(run, tmp_path / "x.trec"), file="x.trec", record=None, field="query_id",
            says="space")


# --- an object where an id belongs -------------------------------------------------------------
@pytest.mark.parametrize("obj", [{"a": 1}, [1, 2], True])
def test_object_as_id_is_an_error_not_a_type_error(tmp_path, obj):
    root = beir(tmp_path / "b", corpus=[{"_id": "d0", "text": "a"}, {"_id": obj, "text": "b"}], qrels=ONE)
    refused(lambda: load_beir(root), file="corpus.jsonl", record="line 2", field="_id", says="expected a string")
    c = load_beir(root, quarantine=[])
    assert c.documents.num_rows == 1 and c.quarantine.num_rows == 1
    root2 = beir(tmp_path / "b2", queries=[{"_id": "q1", "text": "a"}, {"_id": obj, "text": "b"}], qrels=ONE)
    refused(lambda: load_beir(root2), file="queries.jsonl", record="line 2", field="_id", says="expected a string")
