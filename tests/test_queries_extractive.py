"""Extractive pseudo-queries: a document's last long sentence is a query for it; the dataset builder
removes that sentence from the document where it is the query's training positive."""
import pyarrow as pa

from grouprank.config import RunConfig
from grouprank.queries.extractive import extract_queries, pick_sentence, sentences
from grouprank.queries.mine import mine_queries
from grouprank.text import strip_sentence

ABSTRACT = ("Vitamin C deficiency causes scurvy. We followed 120 sailors for 3.5 months on a diet without fruit. "
            "Bleeding gums appeared in 40 of them (e.g. after two months). "
            "Daily citrus intake prevented scurvy in every sailor of the treated group. Done.")


def test_last_long_sentence_is_picked_and_decimals_stay_whole():
    ss = sentences(ABSTRACT)
    assert len(ss) == 5 and "3.5 months" in ss[1] and "(e.g. after two months)" in ss[2]
    # "Done." is too short: the last sentence of >= 8 words is the finding
    assert pick_sentence(ABSTRACT, 8) == "Daily citrus intake prevented scurvy in every sailor of the treated group."
    assert pick_sentence("Only one sentence here that is long enough to be a query.", 3) is None
    assert pick_sentence("Short one. Short two.", 8) is None


def test_strip_sentence_removes_the_query_from_its_source_only_when_present():
    s = pick_sentence(ABSTRACT)
    out = strip_sentence(ABSTRACT.replace(". ", ".\n  "), s)
    assert s not in out and "Bleeding gums" in out and out.endswith("Done.")
    assert strip_sentence("unrelated text", s) == "unrelated text"


def test_mining_adds_extractive_queries_with_provenance(load, tmp_path):
    c = load("scifact")
    docs = c.documents.slice(0, 60)
    cfg = RunConfig.model_validate({"work_dir": str(tmp_path), "queries": {
        "leakage_eval_splits": [], "max_queries": 5, "extract_docs": 12, "roundtrip": False}})
    embed_calls = []

    def embed(texts):  # the near-duplicate dedup needs vectors; one-hot keeps every text apart
        import numpy as np
        embed_calls.append(len(texts))
        v = np.zeros((len(texts), len(texts) + 1), dtype=np.float32)
        v[np.arange(len(texts)), np.arange(len(texts))] = 1
        return v
    table, report = mine_queries(cfg, docs, c.queries, c.qrels, collection="scifact", embed=embed)
    ext = [r for r in table.to_pylist() if r["generator_model"] == "extractive"]
    info = report["extraction"]
    assert info["sampled_docs"] == 12 and len(ext) == info["queries"] == 12 - info["docs_without_sentence"]
    assert len(ext) >= 8
    texts = dict(zip(docs["doc_id"].to_pylist(), docs["text"].to_pylist()))
    for r in ext:
        assert r["source"] == "generated" and r["query_type"] == "sentence" and r["split"] == "generated"
        assert r["text"] == pick_sentence(texts[r["source_doc_id"]]) and r["decision"] == "kept"
    assert len([r for r in table.to_pylist() if r["source"] == "existing"]) == 5


def test_builder_strips_the_sentence_from_an_extractive_positive_only():
    from data_schemas import CANDIDATES, LABELS, QUERIES
    from grouprank.config import DatasetsConfig
    from grouprank.trainsets.stage import build_datasets
    s = pick_sentence(ABSTRACT)
    docs = pa.table({"doc_id": ["d1", "d2", "d3"], "title": ["", "", ""],
                     "text": [ABSTRACT, "Oranges contain vitamin C and were carried on long voyages.",
                              "Volcanic soils in Iceland hold little organic matter."]})
    q = [{"query_id": "gen-sentence-d1", "text": s, "collection": "t", "split": "generated", "source": "generated",
          "source_doc_id": "d1", "generator_model": "extractive", "template_version": "x", "query_type": "sentence",
          "roundtrip_rank": 1, "decision": "kept", "decision_detail": None},
         {"query_id": "q2", "text": s, "collection": "t", "split": "train", "source": "existing",
          "source_doc_id": None, "generator_model": None, "template_version": None, "query_type": None,
          "roundtrip_rank": None, "decision": "kept", "decision_detail": None}]
    lab, cand = [], []
    for qid in ("gen-sentence-d1", "q2"):
        for r, (d, g, f) in enumerate([("d1", 3, 3.0), ("d2", 1, 1.0), ("d3", 0, 0.0)], 1):
            lab.append({"query_id": qid, "doc_id": d, "grade": g, "fused_score": f, "fused_rank": r,
                        "n_judges": 1, "method": "single", "judge_scores": "{}"})
            cand.append({"query_id": qid, "doc_id": d, "rank": r, "fused_score": f, "fusion": "minmax",
                         "pool": "top"})
    dc = DatasetsConfig(negative_max_grade=1, human_guard=False)
    _, _, ret, stats = build_datasets(dc, documents=docs, queries=QUERIES.from_records(q),
                                      labels=LABELS.from_records(lab), candidates=CANDIDATES.from_records(cand))
    pos = {r["query_id"]: r["positive"] for r in ret.to_pylist()}
    assert s not in pos["gen-sentence-d1"] and "Bleeding gums" in pos["gen-sentence-d1"]
    assert s in pos["q2"]  # an ordinary query keeps the document whole
    assert stats["positives_sentence_removed"] == 1


def test_unreached_sampling_prefers_documents_no_existing_query_reaches(load, tmp_path):
    from grouprank.queries.mine import extract
    c = load("scifact")
    docs = c.documents.slice(0, 40)
    ids = docs["doc_id"].to_pylist()
    cfg = RunConfig.model_validate({"work_dir": str(tmp_path), "queries": {"extract_docs": 10, "extract_reach_k": 3}})
    existing = [{"text": f"claim {i}", "decision": "kept"} for i in range(10)]
    asked = []

    def search(texts, k):  # each claim reaches 3 documents: the first 30 of the 40
        asked.append((len(texts), k))
        return [[(ids[3 * i + j], 1.0) for j in range(3)] for i in range(len(texts))]
    recs, info = extract(cfg, docs, existing, None, [], search=search)
    assert asked == [(10, 3)] and info["reached_docs"] == 30
    src = {r["source_doc_id"] for r in recs}
    assert info["sampled_docs"] == 10 and info["sampled_unreached"] == 10 and src <= set(ids[30:])
    # more documents asked for than are unreached: the rest come from the reached ones
    cfg.queries.extract_docs = 15
    recs, info = extract(cfg, docs, existing, None, [], search=search)
    assert info["sampled_docs"] == 15 and info["sampled_unreached"] == 10
    cfg.queries.extract_sampling = "random"
    recs, info = extract(cfg, docs, existing, None, [], search=search)
    assert len(asked) == 2 and "reached_docs" not in info  # random sampling searches nothing
