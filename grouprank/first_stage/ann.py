"""Inner-product FAISS indexes over L2-normalised embeddings, one interface for all kinds:

- ``flat``  IndexFlatIP: exact. Not persisted: rebuilt from the stored embeddings (a memcpy).
- ``hnsw``  IndexHNSWFlat(M) with inner product; efSearch = max(ef_search, k). Memory: the
            float vectors + ~2*M*4 bytes of links per vector. Persisted.
- ``ivfpq`` IndexIVFPQ(flat-IP coarse quantizer, nlist, m sub-quantizers, 8 bits): m bytes per
            vector + 8 for the id; nprobe lists searched. Trained on a seeded sample. Persisted.
            On a tiny corpus nlist and the PQ bits shrink so training stays valid.

Scores returned by an approximate index are approximate (PQ distances); the pipeline rescores
every candidate exactly from the embeddings, so only *which* documents are found depends on the
index kind.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

KINDS = ("flat", "hnsw", "ivfpq")


class FaissIndex:
    def __init__(self, kind: str = "flat", *, hnsw_m: int = 32, hnsw_ef_construction: int = 200,
                 hnsw_ef_search: int = 256, ivf_nlist: int | None = None, ivf_nprobe: int = 32,
                 pq_m: int | None = None, seed: int = 13):
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; choose one of {KINDS}")
        self.kind = kind
        self.hnsw_m, self.hnsw_ef_construction, self.hnsw_ef_search = hnsw_m, hnsw_ef_construction, hnsw_ef_search
        self.ivf_nlist, self.ivf_nprobe, self.pq_m, self.seed = ivf_nlist, ivf_nprobe, pq_m, seed
        self.index = None
        self.build_info: dict = {}

    @classmethod
    def from_config(cls, rcfg, seed: int = 13) -> "FaissIndex":
        ix = rcfg.index  # retrieval.index (IndexSettings)
        return cls(ix.kind, hnsw_m=ix.m, hnsw_ef_construction=ix.ef_construction, hnsw_ef_search=ix.ef_search,
                   ivf_nlist=ix.nlist, ivf_nprobe=ix.nprobe, pq_m=ix.pq_m, seed=seed)

    def params(self) -> dict:
        """What changes the built index (search-time knobs efSearch/nprobe are excluded)."""
        if self.kind == "flat":
            return {"kind": "flat"}
        if self.kind == "hnsw":
            return {"kind": "hnsw", "m": self.hnsw_m, "efc": self.hnsw_ef_construction}
        return {"kind": "ivfpq", "nlist": self.ivf_nlist, "pq_m": self.pq_m, "seed": self.seed}

    @property
    def persistent(self) -> bool:
        return self.kind != "flat"

    @property
    def ntotal(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    # --- build ----------------------------------------------------------------------------
    def build(self, emb: np.ndarray, add_batch: int = 65536) -> "FaissIndex":
        import faiss
        n, d = emb.shape
        if n == 0:
            raise ValueError("cannot build an index over zero vectors")
        if self.kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, int(self.hnsw_m), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = int(self.hnsw_ef_construction)
        else:
            nlist = self.ivf_nlist or max(1, int(4 * math.sqrt(n)))
            nlist = max(1, min(nlist, n // 39 or 1))          # faiss wants >= 39 points per list
            m = self.pq_m or max(1, d // 8)
            while d % m:
                m -= 1
            nbits = 8 if n >= 256 * 4 else max(1, min(8, int(math.log2(max(2, n // 4)))))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFPQ(quantizer, d, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
            n_train = min(n, max(256 * nlist, 2 ** nbits * 64, 10_000))
            rng = np.random.default_rng(self.seed)
            sample = np.sort(rng.choice(n, size=n_train, replace=False)) if n_train < n else np.arange(n)
            index.train(np.ascontiguousarray(emb[sample], dtype=np.float32))
            self.build_info = {"nlist": nlist, "pq_m": m, "nbits": nbits, "n_train": int(n_train),
                               "bytes_per_vector": int(math.ceil(m * nbits / 8))}
        for s in range(0, n, add_batch):
            index.add(np.ascontiguousarray(emb[s:s + add_batch], dtype=np.float32))
        self.index = index
        return self

    # --- search ---------------------------------------------------------------------------
    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [nq, k], ids [nq, k]); id -1 where fewer than k were found."""
        import faiss
        if self.index is None:
            raise RuntimeError("index not built or loaded")
        k = max(1, min(int(k), self.ntotal))
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(int(self.hnsw_ef_search), k)
        elif self.kind == "ivfpq":
            self.index.nprobe = min(int(self.ivf_nprobe), self.index.nlist)
        q = np.ascontiguousarray(q, dtype=np.float32)
        if q.ndim == 1:
            q = q[None]
        scores, ids = self.index.search(q, k)
        return scores, ids

    # --- persistence ----------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        import faiss
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(d / "index.faiss"))
        (d / "faiss_params.json").write_text(json.dumps({
            "kind": self.kind, "hnsw_m": self.hnsw_m, "hnsw_ef_construction": self.hnsw_ef_construction,
            "hnsw_ef_search": self.hnsw_ef_search, "ivf_nlist": self.ivf_nlist, "ivf_nprobe": self.ivf_nprobe,
            "pq_m": self.pq_m, "seed": self.seed, "build_info": self.build_info}))
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike, mmap: bool = False) -> "FaissIndex":
        import faiss
        d = Path(directory)
        p = json.loads((d / "faiss_params.json").read_text())
        info = p.pop("build_info", {})
        obj = cls(**p)
        flags = faiss.IO_FLAG_MMAP if mmap else 0
        obj.index = faiss.read_index(str(d / "index.faiss"), flags)
        obj.build_info = info
        return obj
