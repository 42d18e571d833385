"""Hard inputs (issue 27, item 6): a CSV document up to the documented 2 M characters loads; deep JSON
nesting and lone surrogates are record errors with file and line (quarantined with --quarantine);
ids with invisible characters are refused; integers are read strictly; long queries are cut in
prompts like documents."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from grouprank.collections.base import DEFAULT_MAX_DOC_CHARS, id_problem, strict_int
from grouprank.collections.formats import load_beir, load_tabular
from grouprank.collections.trec import read_trec_qrels
from grouprank.errors import InputError
from tests.test_collections_validation import beir, refused


def _csv_corpus(path: Path, texts: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["doc_id", "text"])
        for i, t in enumerate(texts):
            w.writerow([f"d{i}", t])
    return path


def test_csv_document_over_csvs_default_field_limit_loads(tmp_path):
    """csv's default field limit is 131,072 characters; the documented document limit is 2 M."""
    big = "word " * 60_000  # 300,000 characters
    p = _csv_corpus(tmp_path / "corpus.csv", ["short one", big, "short two"])
    c = load_tabular(p)
    lens = dict(zip(c.documents["doc_id"].to_pylist(), map(len, c.documents["text"].to_pylist())))
    assert lens["d1"] == len(big.strip()) or lens["d1"] == len(big)
    assert c.documents.num_rows == 3


def test_csv_field_past_the_limit_is_a_record_error_with_file_and_row(tmp_path):
    huge = "x" * (2 * DEFAULT_MAX_DOC_CHARS + 10)
    p = _csv_corpus(tmp_path / "corpus.csv", ["short one", huge, "short two"])
    e = refused(lambda: load_tabular(p), file="corpus.csv", record="row 2", field=None, says="unreadable CSV record")
    assert "2,000,000" in e.reason
    c = load_tabular(p, quarantine=[])
    assert c.documents["doc_id"].to_pylist() == ["d0", "d2"]
    assert c.quarantine.num_rows == 1 and "row 2" in c.quarantine["record"].to_pylist()[0]


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    return path


def test_deeply_nested_json_is_a_record_error(tmp_path):
    deep = '{"doc_id": "d1", "text": ' + "[" * 100_000 + "]" * 100_000 + "}"
    p = _jsonl(tmp_path / "corpus.jsonl", ['{"doc_id": "d0", "text": "fine"}', deep, '{"doc_id": "d2", "text": "ok"}'])
    refused(lambda: load_tabular(p), file="corpus.jsonl", record="line 2", field=None, says="nested too deeply")
    c = load_tabular(p, quarantine=[])
    assert c.documents["doc_id"].to_pylist() == ["d0", "d2"] and c.quarantine.num_rows == 1


def test_lone_surrogate_is_a_record_error_naming_the_field(tmp_path):
    p = _jsonl(tmp_path / "corpus.jsonl", ['{"doc_id": "d0", "text": "fine"}',
                                           '{"doc_id": "d1", "text": "broken \\ud800 half"}'])
    refused(lambda: load_tabular(p), file="corpus.jsonl", record="line 2", field="text", says="surrogate")
    c = load_tabular(p, quarantine=[])
    assert c.documents["doc_id"].to_pylist() == ["d0"] and c.quarantine["field"].to_pylist() == ["text"]


@pytest.mark.parametrize("bad", ["q1\U000E0041", "q1\ufe0f", "q1\U000E0101", "q\u2063", "q\u00ad1", "q\u202e1",
                                 "q1\u2028"])
def test_ids_with_invisible_characters_are_refused(bad):
    assert id_problem(bad) is not None, repr(bad)
    assert "U+" in id_problem(bad)


@pytest.mark.parametrize("good", ["q1", "café-7", "документ_3", "文書42", "d/1:a"])
def test_visible_ids_are_accepted(good):
    assert id_problem(good) is None


def test_id_with_a_tag_character_is_refused_on_load(tmp_path):
    root = beir(tmp_path / "b", corpus=[{"_id": "d0", "title": "", "text": "a"},
                                        {"_id": "d0\U000E0020", "title": "", "text": "b"}])
    with pytest.raises(InputError) as ei:
        load_beir(root)
    assert "corpus.jsonl" in str(ei.value) and "U+E0020" in str(ei.value)


@pytest.mark.parametrize("label", ["1_0", "١", "+-1", "1.5", "", "0x1"])
def test_integers_are_parsed_strictly(label):
    with pytest.raises(ValueError):
        strict_int(label)


def test_strict_int_reads_plain_integers():
    assert [strict_int(x) for x in ("0", " 3 ", "-1", "+2", 7, 2.0)] == [0, 3, -1, 2, 7, 2]


def test_grade_1_0_is_an_error_in_trec_and_beir_qrels(tmp_path):
    p = tmp_path / "qrels.txt"
    p.write_text("q1 0 d0 1\nq1 0 d1 1_0\n")
    refused(lambda: read_trec_qrels(p), file="qrels.txt", record="line 2", field="rel", says="not an integer")
    root = beir(tmp_path / "b", qrels="query-id\tcorpus-id\tscore\nq1\td0\t1\nq2\td1\t1_0\n")
    with pytest.raises(InputError) as ei:
        load_beir(root)
    assert "test.tsv" in str(ei.value) and "row 2" in str(ei.value)


def test_long_query_is_cut_in_judge_prompts_with_a_warning(caplog):
    """A 1 MB query: the judge pool (every judge's prompts) holds prompts.max_query_chars of it."""
    import pandas as pd

    from grouprank.config import RunConfig
    from grouprank.judges.base import JudgePool
    from grouprank.prompts import pointwise
    limit = RunConfig().prompts.max_query_chars
    assert limit == 1000
    long_q = "what is " + "very " * 200_000
    cand = pd.DataFrame({"query_id": ["q1", "q2"], "doc_id": ["d0", "d0"], "rank": [1, 1]})
    docs = pd.DataFrame({"doc_id": ["d0"], "title": [None], "text": ["a document"], "collection": ["t"]})
    qs = pd.DataFrame({"query_id": ["q1", "q2"], "text": [long_q, "short query"]})
    with caplog.at_level(logging.WARNING):
        pool = JudgePool.from_tables(cand, docs, qs, max_query_chars=limit)
    assert len(pool.queries["q1"]) == limit and pool.queries["q2"] == "short query"
    assert any("max_query_chars=1000" in r.getMessage() and "'q1'" in r.getMessage() for r in caplog.records)
    msgs = pointwise.build_messages(pool.queries["q1"], pool.docs["d0"])
    assert len(msgs[1]["content"]) < 2000
