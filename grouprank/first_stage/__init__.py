"""Candidate retrieval: BM25 (bm25s), dense (sentence-transformers / ONNX Runtime + FAISS),
hybrid fusion (min-max and RRF), the paper's candidate pools, and persisted, content-addressed
indexes.

Modules (heavy dependencies are imported inside functions, so importing this package is cheap):

- `bm25`      `BM25Retriever`: bm25s + PyStemmer + stopwords, `search`, `score_docs`, save/load
- `model_files` where a model lives, its content fingerprint and prompts
- `dense`     `DenseEncoder` (torch | onnx | onnx-int8 backends), `get_encoder`
- `ann`       `FaissIndex`: flat / HNSW / IVF-PQ inner-product indexes behind one interface
- `store`     corpus fingerprints, index keys, the on-disk index store, resumable sharded encoding
- `fusion`    min-max and reciprocal-rank fusion (pure numpy)
- `pooling`   the paper's pool: top 10 + 40 sampled from ranks 11-200, seeded per query
- `pooling`   also `pool`: the CANDIDATES table of a fused ranking
- `hybrid`    `HybridRetriever` (BM25 + dense over one corpus, persisted indexes), `retrieve`
- `candidates` `QueryCandidates` (one query's union of both lists), `RetrievalResult` (the fused rankings)
- `indexes`   the store keys, and `open_indexes`: another stage opens the indexes a retrieval used
- `stage`     the stage `retrieve`
"""
from __future__ import annotations

__all__ = ["bm25", "dense", "ann", "store", "fusion", "pooling", "hybrid", "candidates", "indexes", "stage", "model_files"]
