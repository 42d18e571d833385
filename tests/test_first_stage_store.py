"""Persisted indexes: reuse without re-encoding, invalidation on corpus/model/param change,
resumable sharded encoding."""
import json

import numpy as np
import pyarrow as pa
import pytest

from grouprank.config import RetrievalConfig
from grouprank.first_stage.hybrid import HybridRetriever, retrieve, store_embeddings
from grouprank.first_stage.store import ShardedEmbeddings, corpus_fingerprint, encode_resumable
from grouprank.text import document_texts
from tests.support.hash_encoder import HashEncoder, toy_documents, toy_queries

CFG = RetrievalConfig(shard_size=64)


def test_rerun_reuses_indexes_without_encoding(tmp_path):
    docs, enc = toy_documents(200), HashEncoder()
    r1 = retrieve(docs, toy_queries(), CFG, tmp_path, encoder=enc)
    assert r1.reused == {"bm25": False, "embeddings": False, "faiss": False}
    assert enc.n_texts_encoded == 200 + 4            # corpus (4 shards of <= 64) + 4 queries
    calls = enc.n_encode_calls
    r2 = retrieve(docs, toy_queries(), CFG, tmp_path, encoder=enc)
    assert r2.reused["bm25"] and r2.reused["embeddings"]
    assert enc.n_encode_calls == calls + 1            # only the queries were encoded
    assert enc.n_texts_encoded == 200 + 4 + 4
    assert r1.ranking.equals(r2.ranking)
    assert len(list((tmp_path / "indexes").glob("bm25-*"))) == 1
    assert len(list((tmp_path / "indexes").glob("emb-*"))) == 1


def test_changed_corpus_invalidates(tmp_path):
    docs, enc = toy_documents(120), HashEncoder()
    r1 = retrieve(docs, toy_queries(), CFG, tmp_path, encoder=enc)
    texts = docs["text"].to_pylist()
    texts[7] = texts[7] + " amyloid"
    changed = docs.set_column(docs.schema.get_field_index("text"), "text", pa.array(texts))
    n0 = enc.n_texts_encoded
    r2 = retrieve(changed, toy_queries(), CFG, tmp_path, encoder=enc)
    assert r2.reused == {"bm25": False, "embeddings": False, "faiss": False}
    assert enc.n_texts_encoded - n0 == 120 + 4
    assert r1.keys["embeddings"] != r2.keys["embeddings"] and r1.keys["bm25"] != r2.keys["bm25"]
    # reordering is a different corpus too (positions are corpus order)
    ids, t = document_texts(docs)
    assert corpus_fingerprint(ids, t) != corpus_fingerprint(ids[::-1], t[::-1])


def test_changed_model_or_params_invalidates_only_what_depends_on_them(tmp_path):
    docs = toy_documents(100)
    r1 = retrieve(docs, toy_queries(), CFG, tmp_path, encoder=HashEncoder(name="m1"))
    r2 = retrieve(docs, toy_queries(), CFG, tmp_path, encoder=HashEncoder(name="m2"))
    assert r2.reused["bm25"] and not r2.reused["embeddings"]
    assert r1.keys["embeddings"] != r2.keys["embeddings"]
    enc = HashEncoder(name="m1")
    r3 = retrieve(docs, toy_queries(), CFG.model_copy(update={"bm25": CFG.bm25.model_copy(update={"k1": 1.2})}), tmp_path, encoder=enc)
    assert not r3.reused["bm25"] and r3.reused["embeddings"] and enc.n_texts_encoded == 4


def test_title_setting_is_part_of_the_corpus_key(tmp_path):
    docs = toy_documents(60)
    a = HybridRetriever(docs, CFG, tmp_path, encoder=HashEncoder())
    b = HybridRetriever(docs, CFG.model_copy(update={"include_title": False}), tmp_path, encoder=HashEncoder())
    assert a.corpus_hash != b.corpus_hash and not b.reused["embeddings"]


def test_interrupted_encoding_resumes(tmp_path):
    texts = [f"text {i}" for i in range(10)]
    calls = []

    def flaky(batch):
        calls.append(len(batch))
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash in shard 2")
        return np.full((len(batch), 4), float(len(calls)), np.float32)

    with pytest.raises(KeyboardInterrupt):
        encode_resumable(tmp_path / "e", texts, flaky, dim=4, shard_size=3)
    assert calls == [3, 3, 3]
    assert not (tmp_path / "e" / "manifest.json").exists()
    arr = encode_resumable(tmp_path / "e", texts, flaky, dim=4, shard_size=3)
    assert calls == [3, 3, 3, 3, 1]                    # shards 2 and 3 only
    assert isinstance(arr, np.memmap) and arr.shape == (10, 4)
    assert list(arr[:, 0]) == [1, 1, 1, 2, 2, 2, 4, 4, 4, 5]
    # complete: a third call encodes nothing
    encode_resumable(tmp_path / "e", texts, flaky, dim=4, shard_size=3)
    assert len(calls) == 5
    # a layout change (another shard size) starts over
    se = ShardedEmbeddings(tmp_path / "e", 10, 4, 5).open()
    assert se.pending() == [0, 1]


def test_store_embeddings_seeds_the_store(tmp_path):
    docs, enc = toy_documents(80), HashEncoder()
    ids, texts = document_texts(docs)
    store_embeddings(docs, CFG, tmp_path, enc.model_id, enc.encode_documents(texts))
    n = enc.n_texts_encoded
    r = HybridRetriever(docs, CFG, tmp_path, encoder=enc)
    assert r.reused["embeddings"] and enc.n_texts_encoded == n
    man = json.loads(next((tmp_path / "indexes").glob("emb-*/manifest.json")).read_text())
    assert man["model_id"] == enc.model_id and man["n"] == 80




def test_parts_encoded_elsewhere_are_taken_in_and_a_foreign_part_is_encoded_again(tmp_path):
    """A shard plan's workers leave each shard in its own file; the merge copies them in shard order
    and encodes only what no worker left, and a part of another layout (a changed shard size) is
    not taken."""
    texts = [f"t{i}" for i in range(9)]
    seen = []

    def enc(batch):
        seen.append(tuple(batch))
        return np.array([[float(t[1:]), 1.0] for t in batch], np.float32)

    d = tmp_path / "e"
    se = ShardedEmbeddings(d, 9, 2, 3)
    se.put_part(0, enc(texts[0:3]))
    np.save(se.part_path(2), np.zeros((2, 2), np.float32))  # damaged: not shard 2's rows
    ShardedEmbeddings(d, 9, 2, 4).put_part(1, np.ones((4, 2), np.float32))  # another shard size: not taken
    seen.clear()
    out = np.array(encode_resumable(d, texts, enc, 2, 3))
    assert seen == [("t3", "t4", "t5"), ("t6", "t7", "t8")]  # shard 0 came from its part
    assert np.array_equal(out[:, 0], np.arange(9, dtype=np.float32))
    assert not (d / "parts").exists()
    with pytest.raises(ValueError, match="shard 1: got embeddings of shape"):
        se.put_part(1, np.zeros((2, 2), np.float32))
