"""The retrieve stage's shard plan: the corpus encoding, one shard per store shard of the document
embeddings (`retrieval.shard_size` documents). BM25, FAISS, search and pooling stay in the stage's
own run (the merge), which finds the embeddings' shards done and finalises them.

A shard encodes its rows with exactly the calls the unsharded encoding makes for them
(`hybrid.encode_in_steps` over the same store shard) into its own file (`parts/NNNNNN.npy`, written
atomically: no two workers write one file, which a network filesystem shared by a cluster would not
keep apart); the merge copies the parts into `embeddings.npy` in shard order, so the output is the
same bytes.
The encoder is the worker's per-process shared one (`dense.get_encoder`): loaded once per worker.
"""
from __future__ import annotations

import threading
from pathlib import Path

from grouprank.text import document_texts

from .config import as_retrieval_config
from .indexes import embeddings_key
from .store import IndexStore, ShardedEmbeddings, corpus_fingerprint


def _encoder(cfg):
    from .dense import encoder_from_config
    return encoder_from_config(as_retrieval_config(cfg), cache_dir=Path(cfg.work_path) / "models")


def plan(cfg, inputs: dict) -> list[dict]:
    """One shard per store shard of the corpus embeddings still to encode; [] when the embeddings
    are complete or the encoding cannot be split (maxp chunking encodes passages, not documents)."""
    rc = as_retrieval_config(cfg)
    if rc.dense_chunking == "maxp":
        return []
    ids, texts = document_texts(inputs["documents"], rc.include_title)
    if not ids:
        return []
    corpus = corpus_fingerprint(ids, texts)
    store = IndexStore(Path(cfg.work_path) / "indexes")
    key = embeddings_key(corpus, _encoder(cfg).model_id)
    if store.is_complete("emb", key):
        return []
    n_shards = -(-len(ids) // rc.shard_size)
    return [{"embeddings": str(store.path("emb", key)), "corpus": corpus, "n_docs": len(ids),
             "store_shard": i} for i in range(n_shards)]


_CORPUS: dict[int, tuple] = {}  # the last documents table's (table, include_title, ids, texts, fingerprint)
_CORPUS_LOCK = threading.Lock()


def _corpus(documents, include_title: bool) -> tuple[list, list, str]:
    """ids, texts and fingerprint of a documents table, computed once per table in this process (a
    worker's shards share the table: `shards.read_inputs_once`)."""
    with _CORPUS_LOCK:
        hit = _CORPUS.get(id(documents))
        if hit is None or hit[0] is not documents or hit[1] != include_title:
            ids, texts = document_texts(documents, include_title)
            _CORPUS.clear()
            hit = _CORPUS[id(documents)] = (documents, include_title, ids, texts, corpus_fingerprint(ids, texts))
        return hit[2], hit[3], hit[4]


def run_shard(params: dict, cfg, inputs: dict) -> dict:
    """Encode one store shard of the corpus into the shared embeddings memmap (marked done)."""
    from . import dense
    from .hybrid import encode_in_steps
    rc = as_retrieval_config(cfg)
    ids, texts, fingerprint = _corpus(inputs["documents"], rc.include_title)
    if len(ids) != params["n_docs"] or fingerprint != params["corpus"]:
        raise ValueError(f"the documents are not the corpus the shard plan was made for "
                         f"({len(ids)} documents, plan: {params['n_docs']})")
    enc = _encoder(cfg)
    se = ShardedEmbeddings(params["embeddings"], len(ids), enc.dimension, rc.shard_size)
    i = int(params["store_shard"])
    lo, hi = se.shard_range(i)
    if not (se.complete or se.part_path(i).exists() or se.shard_done(i)):
        se.put_part(i, encode_in_steps(enc, list(texts[lo:hi])))
    return {"documents": hi - lo, "model_loads_in_worker": dense.MODEL_LOADS[0]}
