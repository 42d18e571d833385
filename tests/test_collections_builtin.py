"""Counts of the five real collections, read in place from ../shared/data."""
import json
import subprocess
import sys

import pytest

from grouprank.text import document_text_map


def _stats(name):
    out = subprocess.run([sys.executable, "-m", "grouprank.cli", "collections", "stats", name, "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_trec_dl19_stats_cli():
    s = _stats("trec_dl19_passage")
    assert s["documents"] == 10818
    assert s["judged_queries"] == 43
    assert s["qrels"] == 9260
    assert s["grades"] == {"0": 5158, "1": 1601, "2": 1804, "3": 697}


def test_scifact_splits(load):
    s = load("scifact").stats()
    assert s["documents"] == 5183
    assert s["splits"]["test"]["queries"] == 300 and s["splits"]["test"]["qrels"] == 339
    assert s["splits"]["train"]["queries"] == 809 and s["splits"]["train"]["qrels"] == 919
    c = load("scifact")
    train_ids = set(c.queries_for("train")["query_id"].to_pylist())
    test_ids = set(c.queries_for("test")["query_id"].to_pylist())
    assert not train_ids & test_ids


def test_scifact_abstract_parsed_from_numpy_repr(load):
    c = load("scifact")
    docs = document_text_map(c.documents, include_title=False)
    text = docs["4983"]
    assert text.startswith("Alterations of the architecture of cerebral white matter")
    assert "['" not in text and "'\n" not in text
    # adjacent literals must not be glued together: '... +/-' '0.24 versus' -> '+/- 0.24'
    assert "+/- 0.24 versus" in text


def test_cranfield_positional_qids_and_inverted_grades(load):
    c = load("cranfield")
    s = c.stats()
    assert (s["documents"], s["queries"], s["qrels"]) == (1400, 225, 1837)
    assert s["grades"] == {0: 225, 1: 363, 2: 734, 3: 387, 4: 128}
    qids = c.queries["query_id"].to_pylist()
    assert qids == [str(i) for i in range(1, 226)]
    # the 3rd query in cran.qry has .I 004, and is query "3" in the qrels
    assert c.queries["text"][2].as_py().startswith("what problems of heat conduction in composite slabs")
    orig = {(r["query_id"], r["doc_id"]): (r["grade"], r["original_label"]) for r in c.qrels.to_pylist()}
    assert orig[("1", "184")] == (3, "2")  # code 2 (high relevance) -> grade 3


def test_cisi_npl(load):
    s = load("cisi").stats()
    assert (s["documents"], s["judged_queries"], s["qrels"]) == (1460, 76, 3114)
    assert s["queries"] == 112
    s = load("npl").stats()
    assert (s["documents"], s["queries"], s["qrels"]) == (11429, 93, 2083)


def test_unknown_collection_is_a_clear_error():
    out = subprocess.run([sys.executable, "-m", "grouprank.cli", "collections", "stats", "nope"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "unknown collection 'nope'" in out.stderr and "Traceback" not in out.stderr


def test_missing_data_root_names_the_file(tmp_path):
    from grouprank.collections import load_collection
    from grouprank.errors import InputError
    with pytest.raises(InputError, match="cisi/CISI.ALL"):
        load_collection("cisi", data_root=tmp_path)
