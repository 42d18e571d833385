"""Long documents: the retrieve stage reports how many documents exceed the dense encoder's window,
and passage chunking (retrieval.dense_chunking=maxp) scores a document by its best passage, so a
document whose relevant part lies past the window is found (the real MiniLM encoder, torch backend)."""
import json

import pyarrow as pa
import pytest

FILLER = ("The committee reviewed the quarterly budget, staffing levels, office supplies, parking permits and the "
          "schedule of routine maintenance for the municipal buildings. ")
TAIL = "Volcanic eruptions in Iceland disrupted air traffic across Europe when the ash cloud spread."
SHORT = ["Sourdough bread needs a starter culture and a long fermentation.",
         "Monarch butterflies migrate thousands of kilometres to Mexico each autumn.",
         "Hydrothermal vents on the deep sea floor host unusual bacteria.",
         "The printing press spread literacy across Europe in the fifteenth century.",
         "Solar panels lose efficiency when their temperature rises.",
         "Coral reefs bleach when ocean water becomes too warm."]


def _docs():
    rows = [{"doc_id": f"s{i}", "title": None, "text": t, "collection": "longdocs"} for i, t in enumerate(SHORT)]
    for i in range(3):  # ~400 tokens of filler, then the relevant sentence: past a 256-token window
        rows.append({"doc_id": f"long{i}", "title": None, "text": FILLER * (12 + i) + TAIL, "collection": "longdocs"})
    from data_schemas import DOCUMENTS
    return DOCUMENTS.from_records(rows)


def _queries():
    return pa.table({"query_id": ["q1", "q2"], "text": ["volcanic ash from Iceland and air traffic",
                                                     "butterfly migration"],
                     "split": ["test", "test"]})


def _run(tmp_path, name, **retrieval):
    from grouprank.config import RunConfig
    from grouprank.first_stage.stage import retrieve_and_pool
    cfg = RunConfig(work_dir=str(tmp_path / "w"), retrieval={"dense_backend": "torch", "depth": 9, "pool_top": 9,
                                                             "pool_sampled": 0, **retrieval})
    out = tmp_path / name
    out.mkdir()
    res = retrieve_and_pool(cfg, _docs(), _queries(), out)
    dense = {}
    for ln in (out / "run_dense.trec").read_text().splitlines():
        q, _, d, _, s, _ = ln.split()
        dense[(q, d)] = float(s)
    return res, json.loads((out / "retrieval_report.json").read_text()), dense


def test_truncation_is_counted_and_maxp_changes_dense_scores(tmp_path, caplog):
    import logging
    caplog.set_level(logging.INFO)
    res, rep, dense = _run(tmp_path, "none")
    lt = rep["long_texts"]
    assert lt["dense_over_window"] == 3 and lt["dense_documents"] == 9 and lt["dense_window_tokens"] == 256
    assert lt["dense_max_tokens"] > 256 and lt["dense_chunking"] == "none"
    assert res.stats["long_texts.dense_over_window"] == 3
    assert any("3 of 9 documents" in r.getMessage() and "truncated" in r.getMessage() for r in caplog.records)
    # encoding progress: a start line and a final line with counts
    assert any(r.getMessage().startswith("encode docs") and "9/9 docs" in r.getMessage() for r in caplog.records)

    res_p, rep_p, dense_p = _run(tmp_path, "maxp", dense_chunking="maxp", dense_chunk_tokens=128,
                                 dense_chunk_stride=64)
    assert rep_p["long_texts"]["dense_chunking"] == "maxp"
    assert rep_p["long_texts"]["dense_passages"] > 9  # the long documents are several passages each
    # short documents are one passage: the same score; the long ones score by their best passage, which
    # holds the volcanic sentence the truncated encoding never saw
    assert dense_p[("q2", "s1")] == pytest.approx(dense[("q2", "s1")], abs=1e-4)
    for i in range(3):
        assert dense_p[("q1", f"long{i}")] > dense[("q1", f"long{i}")] + 0.15
    top_p = max((s, d) for (q, d), s in dense_p.items() if q == "q1")[1]
    assert top_p.startswith("long")


def test_passages_cover_the_text_with_overlap():
    from grouprank.first_stage.dense import DenseEncoder
    enc = DenseEncoder(backend="torch", max_seq_length=64)
    text = " ".join(f"word{i}" for i in range(300))
    ps, off = enc.passages([text, "short text"], chunk_tokens=64, stride=31)
    assert off.tolist()[0] == 0 and off[-1] == len(ps) and off[2] - off[1] == 1 and ps[-1] == "short text"
    long_ps = ps[off[0]:off[1]]
    assert len(long_ps) > 3
    assert long_ps[0].startswith("word0 ") and long_ps[-1].endswith("word299")
    lens = enc.token_lengths(long_ps)
    assert (lens <= 64).all()
    for a, b in zip(long_ps, long_ps[1:]):  # consecutive passages overlap
        assert a.split()[-1] in b.split()
