"""Formats users bring, and fuzzed bad input: a clear error naming file/record/field, or a
quarantine row with the reason, never a deep library traceback and never a silent drop."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grouprank.collections import (load_beir, load_bright, load_collection, load_hf_disk, load_tabular,
                                   read_trec_qrels, read_trec_run, write_trec_run)
from grouprank.errors import InputError


def _beir(tmp_path, corpus_lines, queries_lines=None, qrels="query-id\tcorpus-id\tscore\nq1\td1\t2\n"):
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_bytes(b"\n".join(corpus_lines) + b"\n")
    q = queries_lines or [b'{"_id": "q1", "text": "what is x"}']
    (root / "queries.jsonl").write_bytes(b"\n".join(q) + b"\n")
    (root / "qrels" / "test.tsv").write_text(qrels)
    return root


GOOD = [b'{"_id": "d1", "title": "T", "text": "x is a thing"}', b'{"_id": "d2", "title": "", "text": "other"}']


def test_beir_ok(tmp_path):
    c = load_beir(_beir(tmp_path, GOOD))
    assert c.documents.num_rows == 2 and c.qrels.to_pylist()[0]["grade"] == 2
    assert c.queries_for("test").num_rows == 1


BAD_CASES = {
    "malformed_json": (GOOD + [b'{"_id": "d3", "text": '], "line 3", "malformed JSON"),
    "missing_id": (GOOD + [b'{"title": "t", "text": "y"}'], "line 3", "field '_id'"),
    "duplicate_id": (GOOD + [b'{"_id": "d1", "text": "again"}'], "line 3", "duplicate id 'd1'"),
    "empty_text": (GOOD + [b'{"_id": "d3", "text": "   "}'], "line 3", "field 'text'"),
    "bad_bytes": (GOOD + [b'{"_id": "d3", "text": "caf\xe9"}'], "line 3", "invalid UTF-8"),
    "huge_doc": (GOOD + [json.dumps({"_id": "big", "text": "a" * 20_000_000}).encode()], "line 3", "exceeds the limit"),
    "not_object": (GOOD + [b'[1, 2]'], "line 3", "expected a JSON object"),
    "text_not_string": (GOOD + [b'{"_id": "d3", "text": 5}'], "line 3", "expected text"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_beir_bad_input_error(tmp_path, case):
    lines, where, reason = BAD_CASES[case]
    with pytest.raises(InputError) as ei:
        load_beir(_beir(tmp_path, lines))
    msg = str(ei.value)
    assert "corpus.jsonl" in msg and where in msg and reason in msg


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_beir_bad_input_quarantine(tmp_path, case):
    lines, where, reason = BAD_CASES[case]
    c = load_beir(_beir(tmp_path, lines), quarantine=[])
    assert c.documents.num_rows == 2  # the good ones survive
    q = c.quarantine.to_pylist()
    assert len(q) == 1 and q[0]["record"] == where
    assert reason in f"field '{q[0]['field']}': {q[0]['reason']}"
    assert c.stats()["quarantined"] == 1


def test_beir_qrels_unknown_doc(tmp_path):
    root = _beir(tmp_path, GOOD, qrels="query-id\tcorpus-id\tscore\nq1\tnope\t1\n")
    with pytest.raises(InputError, match="unknown document id 'nope'"):
        load_beir(root)


def test_bright(tmp_path):
    (tmp_path / "documents.jsonl").write_text("\n".join(json.dumps({"id": f"d{i}", "content": f"text {i}"}) for i in range(4)))
    (tmp_path / "examples.jsonl").write_text(json.dumps(
        {"id": "0", "query": "why?", "gold_ids": ["d1"], "excluded_ids": ["d2"], "reasoning": "r"}) + "\n")
    c = load_bright(tmp_path)
    assert c.qrels.num_rows == 1 and c.excluded == {"0": {"d2"}}
    (tmp_path / "examples.jsonl").write_text(json.dumps({"id": "0", "query": "why?", "gold_ids": "d1"}) + "\n")
    with pytest.raises(InputError, match="examples.jsonl, line 1, field 'gold_ids'"):
        load_bright(tmp_path)


def test_bright_excluded_removed_before_scoring():
    import pandas as pd
    from grouprank.evaluation.metrics import evaluate
    run = pd.DataFrame({"query_id": ["q"] * 3, "doc_id": ["ex", "rel", "x"], "score": [3.0, 2.0, 1.0]})
    qrels = pd.DataFrame({"query_id": ["q"], "doc_id": ["rel"], "grade": [1]})
    assert evaluate(run, qrels, ["RR@10"])["RR@10"] == pytest.approx(0.5)
    assert evaluate(run, qrels, ["RR@10"], excluded={"q": {"ex"}})["RR@10"] == pytest.approx(1.0)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet", "jsonl"])
def test_tabular_with_mapping(tmp_path, fmt):
    rows = [{"id": "a", "body": "first doc", "head": "A"}, {"id": "b", "body": "second doc", "head": "B"}]
    p = tmp_path / f"corpus.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), p)
    elif fmt == "jsonl":
        p.write_text("\n".join(json.dumps(r) for r in rows))
    else:
        sep = "," if fmt == "csv" else "\t"
        p.write_text(sep.join(rows[0]) + "\n" + "\n".join(sep.join(r.values()) for r in rows) + "\n")
    qp = tmp_path / "q.jsonl"
    qp.write_text(json.dumps({"qid": "1", "q": "first"}) + "\n")
    qr = tmp_path / "qrels.txt"
    qr.write_text("1 0 a 1\n")
    c = load_tabular(p, doc_mapping={"doc_id": "id", "text": "body", "title": "head"}, queries=qp,
                     query_mapping={"query_id": "qid", "text": "q"}, qrels=qr)
    assert c.documents["title"].to_pylist() == ["A", "B"] and c.qrels.num_rows == 1


def test_csv_bad_bytes_and_extra_fields(tmp_path):
    p = tmp_path / "c.csv"
    p.write_bytes(b"doc_id,text\na,fine\nb,caf\xe9\n")
    with pytest.raises(InputError, match="c.csv, line 3: invalid UTF-8"):
        load_tabular(p)
    p.write_bytes(b"doc_id,text\na,fine,extra\n")
    with pytest.raises(InputError, match="row 1: more fields than the header"):
        load_tabular(p)


def test_hf_dataset_on_disk(tmp_path):
    import datasets
    datasets.Dataset.from_dict({"id": ["x", "y"], "text": ["t1", "t2"]}).save_to_disk(tmp_path / "ds")
    c = load_hf_disk(tmp_path / "ds", doc_mapping={"doc_id": "id"})
    assert c.documents["doc_id"].to_pylist() == ["x", "y"]
    with pytest.raises(InputError, match="not a dataset saved with save_to_disk"):
        load_hf_disk(tmp_path)


def test_trec_files(tmp_path):
    q = tmp_path / "qrels"
    q.write_text("1 0 d1 2\n1 0 d2 0\n")
    t = read_trec_qrels(q)
    assert t["grade"].to_pylist() == [2, 0]
    q.write_text("1 0 d1 2\n1 0 d1 1\n")
    with pytest.raises(InputError, match="line 2, field 'doc_id': duplicate judgment"):
        read_trec_qrels(q)
    q.write_text("1 0 d1 high\n")
    with pytest.raises(InputError, match="line 1, field 'rel'"):
        read_trec_qrels(q)
    r = tmp_path / "run"
    r.write_text("1 Q0 d1 1 2.5 sys\n1 Q0 d2 2 3.5 sys\n")
    run = read_trec_run(r)
    assert run.to_pylist()[0]["doc_id"] == "d2"  # re-ranked by score
    write_trec_run(run, tmp_path / "out.run")
    assert read_trec_run(tmp_path / "out.run").to_pylist() == run.to_pylist()
    r.write_text("1 Q0 d1 1 nan? sys\n")
    with pytest.raises(InputError, match="line 1, field 'score'"):
        read_trec_run(r)
