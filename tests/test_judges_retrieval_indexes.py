"""The judge stage reuses what the retrieve stage built: its `indexes` output (a manifest of the
persisted BM25 index and document embeddings) feeds the judge, whose local judge then indexes and
encodes no document, and judges exactly as it does when it builds everything itself."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from data_schemas import DOCUMENTS, JUDGMENTS
from grouprank.config import RunConfig
from grouprank.first_stage.bm25 import BM25Retriever
from grouprank.first_stage.dense import DenseEncoder
from tests.support.hash_encoder import toy_documents

QUERIES = {"q1": "protein aggregation and chaperones", "q2": "vitamin and bone calcium",
           "q3": "heart blood pressure"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A BEIR folder of 60 documents of varied lengths (1 to 5 copies of a toy text: padding
    differs between the retrieval's encoding batches and the judge's)."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "qrels").mkdir()
    with open(root / "corpus.jsonl", "w") as f:
        for i, d in enumerate(toy_documents(60).to_pylist()):
            text = " ".join([d["text"]] * (1 + i % 5))
            f.write(json.dumps({"_id": d["doc_id"], "title": d["title"], "text": text}) + "\n")
    with open(root / "queries.jsonl", "w") as f:
        for q, t in QUERIES.items():
            f.write(json.dumps({"_id": q, "text": t}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0000\t1\nq2\td0001\t1\nq3\td0003\t1\n")
    return root


def _cfg(tiny, work: Path, **retrieval) -> RunConfig:
    # torch backend: no ONNX export into each test's work dir; the judge follows retrieval's backend
    return RunConfig(work_dir=str(work), data={"collection": "tiny", "format": "beir", "path": str(tiny)},
                     queries={"splits": ["test"], "leakage_eval_splits": []},
                     retrieval={"dense_backend": "torch", "depth": 20, "pool_top": 5, "pool_sampled": 10,
                                "pool_sample_from": [6, 20], **retrieval})


@pytest.fixture(scope="module")
def retrieved(tiny, tmp_path_factory):
    from grouprank.executor import run_pipeline
    cfg = _cfg(tiny, tmp_path_factory.mktemp("work"))
    run_pipeline(cfg, ["retrieve"], log_fn=lambda m: None)
    return cfg


@pytest.fixture()
def counters(monkeypatch):
    """BM25 indexes built and document texts encoded (by any DenseEncoder) while the test runs."""
    n = {"bm25_index": 0, "docs_encoded": 0}
    index, encode_documents = BM25Retriever.index, DenseEncoder.encode_documents

    def counting_index(self, doc_ids, texts, show_progress=False):
        n["bm25_index"] += 1
        return index(self, doc_ids, texts, show_progress)

    def counting_encode(self, texts, show_progress=None):
        n["docs_encoded"] += len(texts)
        return encode_documents(self, texts, show_progress)
    monkeypatch.setattr(BM25Retriever, "index", counting_index)
    monkeypatch.setattr(DenseEncoder, "encode_documents", counting_encode)
    return n


def _record(cfg, name):
    from grouprank.executor import stage, stored_record
    return stored_record(cfg, stage(name))


def _judge_from_files(cfg, out_dir: Path, **extra) -> dict:
    """The judge stage fed from the upstream files, without the retrieval's `indexes`."""
    from grouprank.executor import run_stage, stage
    ups = {n: _record(cfg, s)["outputs"][o] for n, (s, o) in
           {"documents": ("load", "documents"), "mined_queries": ("mine_queries", "mined_queries"),
            "candidates": ("retrieve", "candidates")}.items()}
    return run_stage(stage("judge"), cfg, {**ups, **extra}, out_dir=out_dir)


def _rows(path) -> list[dict]:
    rows = JUDGMENTS.read(path).to_pylist()
    return sorted(rows, key=lambda r: (r["judge_id"], r["query_id"], r["doc_id"], r["pass_index"]))


def test_retrieve_declares_its_indexes_manifest(retrieved):
    from grouprank.executor import run_pipeline
    from grouprank.first_stage.store import IndexStore
    cfg = retrieved
    rec = _record(cfg, "retrieve")
    path = Path(rec["outputs"]["indexes"])
    assert path.name == "indexes.json" and path.parent == cfg.work_path / "retrieve"
    man = json.loads(path.read_text())
    report = json.loads(Path(rec["outputs"]["retrieval_report"]).read_text())
    assert man["bm25"]["key"] == report["keys"]["bm25"] and man["embeddings"]["key"] == report["keys"]["embeddings"]
    store = IndexStore(man["store"])
    assert store.root == (cfg.work_path / "indexes").resolve()
    assert store.is_complete("bm25", man["bm25"]["key"]) and store.is_complete("emb", man["embeddings"]["key"])
    assert (store.root / man["bm25"]["dir"]).is_dir() and (store.root / man["embeddings"]["dir"]).is_dir()
    assert man["embeddings"]["model_id"].startswith("all-MiniLM-L6-v2@") and "/torch/" in man["embeddings"]["model_id"]
    assert man["n_docs"] == 60 and man["bm25"]["params"]["stemmer"] == cfg.retrieval.bm25.stemmer
    # the executor fingerprints the manifest, and a rerun that reuses the indexes writes the same
    # bytes: the judge downstream keeps its cache key
    assert rec["fingerprints"]["indexes"] != "absent"
    before = path.read_bytes()
    run_pipeline(cfg, ["retrieve"], refresh=True, log_fn=lambda m: None)
    assert path.read_bytes() == before
    assert _record(cfg, "retrieve")["fingerprints"]["indexes"] == rec["fingerprints"]["indexes"]


def test_judge_with_indexes_builds_nothing_and_judges_the_same(retrieved, counters, tmp_path):
    from grouprank.executor import run_pipeline
    cfg = retrieved
    summary = run_pipeline(cfg, ["judge"], log_fn=lambda m: None)
    judge = summary["stages"]["judge"]
    assert judge["state"] == "ran"
    assert _record(cfg, "judge")["input_hashes"]["indexes"] == _record(cfg, "retrieve")["fingerprints"]["indexes"]
    # neither a second BM25 index nor a second encoding of the documents
    assert counters == {"bm25_index": 0, "docs_encoded": 0}
    st = judge["stats"]
    assert st["local.reused_bm25"] and st["local.reused_embeddings"] and st["local.docs_encoded"] == 0
    with_indexes = _rows(judge["outputs"]["judgments"])
    assert len(with_indexes) == st["pairs"] == 45

    # the same stage without `indexes` (a judge fed from files) builds and encodes (its own vector
    # cache emptied first) ...
    for f in cfg.work_path.glob("local_judge_embeddings.sqlite*"):
        f.unlink()
    rec = _judge_from_files(cfg, tmp_path / "judge_files")
    assert counters["bm25_index"] == 1 and counters["docs_encoded"] > 0
    assert not rec["stats"]["local.reused_bm25"] and rec["stats"]["local.docs_encoded"] == counters["docs_encoded"]
    # ... and writes the same judgments, every column (scores, feature values, hashes)
    assert _rows(rec["outputs"]["judgments"]) == with_indexes


def test_judge_falls_back_when_the_manifest_does_not_fit(retrieved, counters, tmp_path, caplog):
    from grouprank.executor import run_pipeline
    cfg = retrieved
    reused = _rows(run_pipeline(cfg, ["judge"], log_fn=lambda m: None)["stages"]["judge"]["outputs"]["judgments"])
    man = json.loads(Path(_record(cfg, "retrieve")["outputs"]["indexes"]).read_text())
    man["embeddings"]["key"] = "0" * 20  # embeddings of another encoder
    bad = tmp_path / "indexes.json"
    bad.write_text(json.dumps(man))
    n = dict(counters)
    with caplog.at_level(logging.WARNING, logger="grouprank.judges"):
        rec = _judge_from_files(cfg, tmp_path / "judge", indexes=bad)
    assert "not reusing the retrieval's indexes" in caplog.text and "encoder" in caplog.text
    # (document vectors may come from the local judge's own SQLite cache, filled by another test)
    assert counters["bm25_index"] == n["bm25_index"] + 1
    assert not rec["stats"]["local.reused_bm25"] and not rec["stats"]["local.reused_embeddings"]
    assert _rows(rec["outputs"]["judgments"]) == reused


def test_open_indexes_checks_documents_settings_and_store(retrieved, tmp_path):
    from grouprank.first_stage.indexes import IndexMismatch, open_indexes
    cfg = retrieved
    mpath = Path(_record(cfg, "retrieve")["outputs"]["indexes"])
    docs = DOCUMENTS.read(_record(cfg, "load")["outputs"]["documents"])
    ix = open_indexes(mpath, docs, cfg, cfg.work_path)
    assert ix.embeddings.shape == (60, 384) and ix.bm25.doc_ids == ix.doc_ids and ix.position("d0007") == 7
    with pytest.raises(IndexMismatch, match="documents"):
        open_indexes(mpath, docs.slice(1), cfg, cfg.work_path)
    with pytest.raises(IndexMismatch, match="BM25 .*key"):
        open_indexes(mpath, docs, cfg.model_copy(update={"retrieval": cfg.retrieval.model_copy(
            update={"bm25": cfg.retrieval.bm25.model_copy(update={"stopwords": None})})}), cfg.work_path)
    with pytest.raises(IndexMismatch, match="documents"):  # include_title changes the indexed texts
        open_indexes(mpath, docs, cfg.model_copy(update={"retrieval": cfg.retrieval.model_copy(
            update={"include_title": False})}), cfg.work_path)
    man = json.loads(mpath.read_text())
    man["store"] = str(tmp_path / "elsewhere")
    with pytest.raises(IndexMismatch, match="missing"):
        open_indexes(man, docs, cfg, cfg.work_path)


def test_local_scorer_uses_only_what_matches(retrieved, caplog):
    """A background corpus other than the indexed one, or other BM25 settings, are not served from
    the retrieval's indexes."""
    from grouprank.first_stage.indexes import open_indexes
    from grouprank.judges.local_scorer import LocalScorer
    from grouprank.text import document_text_map
    cfg = retrieved
    docs = DOCUMENTS.read(_record(cfg, "load")["outputs"]["documents"])
    ix = open_indexes(Path(_record(cfg, "retrieve")["outputs"]["indexes"]), docs, cfg, cfg.work_path)
    bg = document_text_map(docs)
    same = LocalScorer(bg, dense_backend="torch", indexes=ix)
    assert same.stats["shared"] == {"bm25": True, "embeddings": True} and same.bm25() is ix.bm25
    with caplog.at_level(logging.WARNING):
        other_bm25 = LocalScorer(bg, dense_backend="torch", bm25_params={"stopwords": None}, indexes=ix)
        other_model = LocalScorer(bg, dense_backend="onnx", indexes=ix)
        fewer = LocalScorer(dict(list(bg.items())[:10]), dense_backend="torch", indexes=ix)
    assert other_bm25.stats["shared"] == {"bm25": False, "embeddings": True}
    assert other_model.stats["shared"] == {"bm25": True, "embeddings": False}
    assert fewer.stats["shared"] == {"bm25": False, "embeddings": False}
    assert "not the one the retrieval indexed" in caplog.text
