"""The indexes a retrieval used, opened by another stage.

`HybridRetriever.index_manifest()` names the persisted indexes a retrieval used (store, keys,
encoder, corpus fingerprint); the retrieve stage writes it as its `indexes` output. The local judge
opens the same BM25 index and document embeddings with `open_indexes` instead of indexing and
encoding the corpus again. The store keys are defined here, for both sides.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from grouprank.text import document_texts

from .config import as_retrieval_config
from .store import IndexStore, ShardedEmbeddings, corpus_fingerprint, stable_key


def bm25_key(corpus_hash: str, bm) -> str:
    """Store key of a BM25 index: corpus fingerprint + the `BM25Retriever`'s parameters."""
    return stable_key("bm25", corpus_hash, bm.params())


def embeddings_key(corpus_hash: str, model_id: str) -> str:
    """Store key of document embeddings: corpus fingerprint + the encoder's `model_id`."""
    return stable_key("emb", corpus_hash, model_id)


INDEX_MANIFEST_FORMAT = 1


class IndexMismatch(ValueError):
    """The indexes a manifest names cannot be used for these documents and settings (the reason
    is the message): the caller builds its own instead."""


@dataclass
class RetrievalIndexes:
    """A retrieval's persisted indexes, opened read-only (`open_indexes`): the BM25 index and the
    document embeddings (row = corpus position) over `doc_ids`, and the encoder that made them
    (for queries)."""
    doc_ids: list[str]
    corpus_hash: str
    bm25: Any                 # BM25Retriever
    embeddings: np.ndarray    # float32 [n_docs, dim], read-only memmap
    encoder: Any              # DenseEncoder (or anything with model_id / encode_queries)
    keys: dict[str, str]
    _pos: dict[str, int] | None = field(default=None, repr=False)

    def position(self, doc_id: str) -> int | None:
        if self._pos is None:
            self._pos = {d: i for i, d in enumerate(self.doc_ids)}
        return self._pos.get(doc_id)


def _check_index(store, kind: str, key: str, recorded: dict, what: str) -> None:
    """The manifest names this index (same key) and the store holds it complete, else IndexMismatch."""
    if key != recorded.get("key"):
        raise IndexMismatch(f"{what}: key {key} is not the retrieval's {recorded.get('key')}")
    if not store.is_complete(kind, key):
        raise IndexMismatch(f"{what}: {store.path(kind, key)} is missing or incomplete")


def open_indexes(manifest: dict | str | os.PathLike, documents: pa.Table, cfg=None,
                 work_dir: str | os.PathLike | None = None, *, encoder=None) -> RetrievalIndexes:
    """Open the BM25 index and the embeddings a retrieval recorded in `manifest` (its
    `index_manifest()`, or the path of the JSON file), for `documents` and the retrieval settings
    of `cfg`. Builds and encodes nothing; FAISS is not opened (no search happens).

    The keys are recomputed from the documents and `cfg` exactly as `HybridRetriever` computes
    them and must equal the manifest's, and the store folders must be complete; otherwise
    `IndexMismatch` says why. `encoder`: the retrieval's encoder (default: the shared one for
    `cfg`, with its ONNX exports under `<work_dir>/models`)."""
    from .bm25 import BM25Retriever
    if not isinstance(manifest, dict):
        try:
            manifest = json.loads(Path(manifest).read_text())
        except (OSError, ValueError) as e:
            raise IndexMismatch(f"cannot read the index manifest {manifest}: {e}") from None
    if manifest.get("format") != INDEX_MANIFEST_FORMAT:
        raise IndexMismatch(f"index manifest format {manifest.get('format')!r}, expected {INDEX_MANIFEST_FORMAT}")
    rc = as_retrieval_config(cfg)
    ids, texts = document_texts(documents, rc.include_title)
    ch = corpus_fingerprint(ids, texts)
    if ch != manifest.get("corpus"):
        raise IndexMismatch("the documents (or include_title) differ from the corpus the retrieval indexed")
    store = IndexStore(manifest["store"])
    bm = BM25Retriever(**rc.bm25.model_dump())
    bkey = bm25_key(ch, bm)
    mb = manifest.get("bm25") or {}
    _check_index(store, "bm25", bkey, mb, f"BM25 (settings {bm.params()} vs the retrieval's {mb.get('params')})")
    if encoder is None:
        from .dense import encoder_from_config
        root = Path(work_dir) if work_dir is not None else store.root.parent
        encoder = encoder_from_config(rc, cache_dir=root / "models")
    ekey = embeddings_key(ch, encoder.model_id)
    me = manifest.get("embeddings") or {}
    _check_index(store, "emb", ekey, me, f"embeddings (encoder {encoder.model_id} vs the retrieval's "
                                         f"{me.get('model_id')})")
    emb = ShardedEmbeddings.load(store.path("emb", ekey))
    if emb.ndim != 2 or emb.shape[0] != len(ids):
        raise IndexMismatch(f"embeddings of shape {emb.shape} for {len(ids)} documents")
    bm25 = BM25Retriever.load(store.path("bm25", bkey))
    if bm25.doc_ids != ids:
        raise IndexMismatch("the BM25 index's document order differs from the documents'")
    return RetrievalIndexes(ids, ch, bm25, emb, encoder, {"bm25": bkey, "embeddings": ekey})
