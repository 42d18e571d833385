"""The retrieval stage: BM25 + dense candidates, fused, pooled.

    result = retrieve(documents, queries, cfg, work_dir)     # fused top-`depth` per query
    cands  = pool(result, cfg, run_path=work_dir / "candidates.trec")   # CANDIDATES table

For each query both retrievers return their top `depth`; with `union_rescore` (default) every
document of the union is then scored by *both* retrievers exactly (BM25 from the query's full score
vector, which bm25s computes anyway; dense as a dot product with the stored embedding), so fusion
never has to invent a score for a document one retriever did not return. The fused list is cut
to `depth`. `bm25_rank` / `dense_rank` are the ranks in each retriever's own top-`depth` list
(null outside it); `bm25_score` / `dense_score` are exact scores for every fused document.

Indexes persist under `<work_dir>/indexes` (see `store`): reruns reuse them; a corpus, model or
parameter change makes a new key. `HybridRetriever.index_manifest()` names the indexes a retriever
used (store, keys, encoder, corpus fingerprint): the retrieve stage writes it as its `indexes`
output, and `indexes.open_indexes(manifest, documents, cfg)` opens those same indexes for another
stage (the local judge) without building or encoding anything.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from data_schemas import RANKING

from . import fusion as F
from grouprank.text import document_texts, top_k

from .candidates import QueryCandidates, RetrievalResult, drop_excluded
from .config import as_retrieval_config
from .indexes import INDEX_MANIFEST_FORMAT, bm25_key, embeddings_key
from .store import IndexStore, corpus_fingerprint, encode_resumable, stable_key

_log = logging.getLogger(__name__)


def encode_in_steps(enc, texts: list[str], update=None) -> np.ndarray:
    """Encode documents in fixed steps (the same calls whichever process encodes a store shard, so
    a sharded encoding gives the unsharded one's bytes); `update(n)` after each step."""
    parts = []
    step = max(enc.batch_size * 4, 64) if hasattr(enc, "batch_size") else 256
    for i in range(0, len(texts), step):
        parts.append(enc.encode_documents(texts[i:i + step], show_progress=False))
        if update is not None:
            update(len(texts[i:i + step]))
    return np.vstack(parts) if parts else np.zeros((0, enc.dimension), np.float32)


class HybridRetriever:
    """BM25 + dense retriever over one corpus, with persisted indexes.

    Other stages use it directly: `search(texts, k)`, `rank_of(texts, doc_ids, k)` (e.g. the
    query-mining round-trip filter), `candidates(texts)` for the per-retriever detail."""

    def __init__(self, documents: pa.Table, cfg=None, work_dir: str | os.PathLike | None = None, *,
                 encoder=None, show_progress: bool = False, progress=None):
        self.cfg = as_retrieval_config(cfg)
        self.seed = int(getattr(cfg, "seed", 13))  # the run's seed when given a RunConfig (IVF training sample)
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.show_progress = show_progress
        self.timings: dict[str, float] = {}
        self.reused: dict[str, bool] = {}
        t = time.perf_counter()
        self.doc_ids, self.texts = document_texts(documents, self.cfg.include_title)
        if not self.doc_ids:
            raise ValueError("empty corpus")
        self.corpus_hash = corpus_fingerprint(self.doc_ids, self.texts)
        self.timings["corpus_hash_s"] = time.perf_counter() - t
        self.store = IndexStore(self.work_dir / "indexes") if self.work_dir is not None else None
        if encoder is None:
            from .dense import encoder_from_config
            cache = (self.work_dir / "models") if self.work_dir is not None else None
            encoder = encoder_from_config(self.cfg, cache_dir=cache)
        self.encoder = encoder
        self.progress = progress
        self.keys: dict[str, str] = {}
        self._pos: dict[str, int] | None = None
        self.maxp = self.cfg.dense_chunking == "maxp"
        self.passage_offsets: np.ndarray | None = None  # maxp: doc i's passages = [off[i], off[i+1])
        self.long_texts = self._window_report()
        self._build_bm25()
        self._build_dense()

    # --- long documents -------------------------------------------------------------------
    def _window_report(self) -> dict[str, Any]:
        """How many documents exceed the dense encoder's window (cached in the store per corpus and
        encoder); logged as a warning when they are truncated."""
        enc = self.encoder
        if not hasattr(enc, "window_report"):
            return {}
        path = None
        if self.store is not None:
            path = self.store.root / f"window-{stable_key('window', self.corpus_hash, enc.model_id)}.json"
        rep = None
        if path is not None and path.exists():
            try:
                rep = json.loads(path.read_text())
            except ValueError:
                rep = None
        if rep is None:
            try:
                rep = enc.window_report(self.texts)
            except (OSError, ImportError, ValueError) as e:
                _log.warning("cannot count the documents' tokens for %s: %s", enc.model_id, e)
                return {}
            if path is not None:
                from grouprank.atomic import write_json_atomic
                write_json_atomic(path, rep, indent=None)
        out = {"dense_window_tokens": rep["window_tokens"], "dense_over_window": rep["over_window"],
               "dense_documents": rep["texts"], "dense_max_tokens": rep["max_tokens"],
               "dense_chunking": self.cfg.dense_chunking}
        if rep["over_window"]:
            if self.maxp:
                _log.info("%d of %d documents are longer than the dense encoder's window of %d tokens (longest "
                          "%d): scored by their best passage (dense_chunking=maxp)", rep["over_window"],
                          rep["texts"], rep["window_tokens"], rep["max_tokens"])
            else:
                _log.warning("%d of %d documents (%.0f%%) are longer than the dense encoder's window of %d tokens "
                             "(longest %d) and are truncated; retrieval.dense_chunking=maxp scores them by their "
                             "best passage instead", rep["over_window"], rep["texts"],
                             100 * rep["over_window_fraction"], rep["window_tokens"], rep["max_tokens"])
        return out

    # --- indexes --------------------------------------------------------------------------
    def _build_bm25(self) -> None:
        from .bm25 import BM25Retriever
        c = self.cfg
        bm = BM25Retriever(**c.bm25.model_dump())
        key = self.keys["bm25"] = bm25_key(self.corpus_hash, bm)
        t = time.perf_counter()
        if self.store is not None and self.store.is_complete("bm25", key):
            self.bm25 = BM25Retriever.load(self.store.path("bm25", key))
            self.reused["bm25"] = True
        else:
            bm.index(self.doc_ids, self.texts, show_progress=self.show_progress)
            if self.store is not None:
                with self.store.building("bm25", key, {"kind": "bm25", "corpus": self.corpus_hash,
                                                       "n_docs": len(self.doc_ids), **bm.params()}) as d:
                    bm.save(d)
            self.bm25 = bm
            self.reused["bm25"] = False
        self.timings["bm25_index_s"] = time.perf_counter() - t

    def _build_dense(self) -> None:
        from .ann import FaissIndex
        from grouprank.progress import Progress
        enc = self.encoder
        texts, model_id = self.texts, enc.model_id
        if self.maxp:
            c = self.cfg
            texts, self.passage_offsets = enc.passages(self.texts, c.dense_chunk_tokens, c.dense_chunk_stride)
            model_id = f"{enc.model_id}#maxp-{c.dense_chunk_tokens or enc.window_tokens}-{c.dense_chunk_stride or 'half'}"
            self.long_texts["dense_passages"] = len(texts)
        ekey = self.keys["embeddings"] = embeddings_key(self.corpus_hash, model_id)
        t = time.perf_counter()
        n_before = getattr(enc, "n_texts_encoded", 0)
        what = "passages" if self.maxp else "docs"
        prog: Progress | None = None

        def encode_fn(ts):
            nonlocal prog
            if prog is None:
                prog = Progress(f"encode {what} ({enc.model_id.split('/')[0]})", len(texts), unit=what,
                                callback=self.progress, bar=self.show_progress or None)
            return encode_in_steps(enc, ts, prog.update)
        # reused = complete before this run (a shard plan's workers may have encoded them for it)
        complete_before = self.store is not None and self.store.is_complete("emb", ekey)
        try:
            if self.store is not None:
                self.embeddings = encode_resumable(
                    self.store.path("emb", ekey), texts, encode_fn, enc.dimension, self.cfg.shard_size,
                    meta={"kind": "embeddings", "corpus": self.corpus_hash, "model_id": model_id})
            else:
                self.embeddings = encode_fn(list(texts))
        finally:
            if prog is not None:
                prog.close()
        n_encoded = getattr(enc, "n_texts_encoded", 0) - n_before
        self.reused["embeddings"] = n_encoded == 0 and (self.store is None or complete_before)
        self.timings["dense_encode_s"] = time.perf_counter() - t
        self.timings["dense_docs_encoded"] = float(n_encoded)

        t = time.perf_counter()
        ann = FaissIndex.from_config(self.cfg, self.seed)
        fkey = self.keys["faiss"] = stable_key("faiss", ekey, ann.params())
        if ann.persistent and self.store is not None and self.store.is_complete("faiss", fkey):
            loaded = FaissIndex.load(self.store.path("faiss", fkey))
            loaded.hnsw_ef_search, loaded.ivf_nprobe = ann.hnsw_ef_search, ann.ivf_nprobe  # search-time knobs
            ann = loaded
            self.reused["faiss"] = True
        else:
            ann.build(self.embeddings)
            if ann.persistent and self.store is not None:
                with self.store.building("faiss", fkey, {"kind": "faiss", "embeddings": ekey, **ann.params(),
                                                         **ann.build_info}) as d:
                    ann.save(d)
            self.reused["faiss"] = False
        self.ann = ann
        self.timings["dense_index_s"] = time.perf_counter() - t

    def index_manifest(self) -> dict:
        """The persisted indexes this retriever uses, for another stage to open (`indexes.open_indexes`):
        store root, keys and folder names, BM25 parameters, encoder `model_id`, corpus fingerprint.
        Plain, deterministic JSON (no timestamps): the same indexes give the same bytes."""
        if self.store is None:
            raise ValueError("this retriever persists nothing (no work_dir): there is no index to name")
        k = self.keys
        return {"format": INDEX_MANIFEST_FORMAT, "store": str(self.store.root.resolve()),
                "corpus": self.corpus_hash, "n_docs": len(self.doc_ids), "include_title": self.cfg.include_title,
                "bm25": {"key": k["bm25"], "dir": self.store.path("bm25", k["bm25"]).name,
                         "params": self.bm25.params()},
                "embeddings": {"key": k["embeddings"], "dir": self.store.path("emb", k["embeddings"]).name,
                               "model_id": self.encoder.model_id, "dim": int(self.embeddings.shape[1])},
                "faiss": {"key": k["faiss"], "params": self.ann.params(), "persisted": bool(self.ann.persistent)}}

    # --- retrieval ------------------------------------------------------------------------
    def doc_position(self, doc_id: str) -> int | None:
        if self._pos is None:
            self._pos = {d: i for i, d in enumerate(self.doc_ids)}
        return self._pos.get(doc_id)

    def candidates(self, query_texts: Sequence[str], depth: int | None = None,
                   timings: dict | None = None) -> list[QueryCandidates]:
        depth = int(depth or self.cfg.depth)
        tm = timings if timings is not None else {}
        texts = [str(q) for q in query_texts]
        t = time.perf_counter()
        qemb = self.encoder.encode_queries(texts, show_progress=False) if texts else np.zeros((0, 1), np.float32)
        tm["query_encode_s"] = tm.get("query_encode_s", 0.0) + time.perf_counter() - t
        t = time.perf_counter()
        if texts:
            d_scores, d_ids = self._dense_search(qemb, depth)
        tm["dense_search_s"] = tm.get("dense_search_s", 0.0) + time.perf_counter() - t
        out: list[QueryCandidates] = []
        t = time.perf_counter()
        token_ids = self.bm25.query_token_ids(texts)
        t_bm = time.perf_counter() - t
        t_rest = 0.0
        union = self.cfg.union_rescore
        for qi, ids_q in enumerate(token_ids):
            t0 = time.perf_counter()
            s = self.bm25.scores_from_token_ids(ids_q)
            b_idx, b_val = top_k(s, depth)
            keep = b_val > 0
            b_idx, b_val = b_idx[keep], b_val[keep]
            t1 = time.perf_counter()
            ids = d_ids[qi]
            ok = ids >= 0
            dd_idx, dd_val = ids[ok].astype(np.int64), d_scores[qi][ok]
            U = np.union1d(b_idx, dd_idx)
            n = U.shape[0]
            b_in = np.searchsorted(U, b_idx)
            d_in = np.searchsorted(U, dd_idx)
            if union:
                bm = s[U].astype(np.float64)
                de = self._dense_scores(U, qemb[qi]) if n else np.zeros(0)
            else:
                bm = np.full(n, np.nan)
                bm[b_in] = b_val
                de = np.full(n, np.nan)
                de[d_in] = dd_val
            b_rank = np.zeros(n, dtype=np.int64)
            b_rank[b_in] = np.arange(1, b_in.shape[0] + 1)
            d_rank = np.zeros(n, dtype=np.int64)
            if d_in.shape[0]:
                # the dense list's own order, by exact score when rescored (identical for flat)
                sub = de[d_in]
                d_rank[d_in[np.lexsort((U[d_in], -sub))]] = np.arange(1, d_in.shape[0] + 1)
            out.append(QueryCandidates(U, bm, de, b_rank, d_rank))
            t2 = time.perf_counter()
            t_bm += t1 - t0
            t_rest += t2 - t1
        tm["bm25_search_s"] = tm.get("bm25_search_s", 0.0) + t_bm
        tm["union_rescore_s"] = tm.get("union_rescore_s", 0.0) + t_rest
        return out

    def _dense_scores(self, positions: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Dense score of each document at `positions`: cosine with its embedding, or with maxp its
        best passage's."""
        emb = self.embeddings
        if not self.maxp:
            return (np.asarray(emb[positions], dtype=np.float32) @ q).astype(np.float64)
        off = self.passage_offsets
        lo, hi = off[positions], off[positions + 1]
        counts = hi - lo
        idx = np.repeat(lo - np.r_[0, np.cumsum(counts)[:-1]], counts) + np.arange(int(counts.sum()))
        sc = np.asarray(emb[idx], dtype=np.float32) @ q
        return np.maximum.reduceat(sc, np.r_[0, np.cumsum(counts)[:-1]]).astype(np.float64)

    def _dense_search(self, qemb: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-`depth` documents per query: (scores, corpus positions; -1 = none). With maxp the passage
        index is searched deeper and each document keeps its best passage's score."""
        if not self.maxp:
            return self.ann.search(qemb, depth)
        owner = np.repeat(np.arange(len(self.doc_ids)), np.diff(self.passage_offsets))
        n_p = owner.shape[0]
        k = min(n_p, max(depth * 4, depth + 64))
        while True:
            ps, pi = self.ann.search(qemb, k)
            scores = np.full((qemb.shape[0], depth), -np.inf, dtype=np.float32)
            ids = np.full((qemb.shape[0], depth), -1, dtype=np.int64)
            short = False
            for qi in range(qemb.shape[0]):
                ok = pi[qi] >= 0
                docs = owner[pi[qi][ok]]
                _, first = np.unique(docs, return_index=True)  # the best passage of each document
                first = np.sort(first)[:depth]
                m = first.shape[0]
                ids[qi, :m] = docs[first]
                scores[qi, :m] = ps[qi][ok][first]
                short |= m < min(depth, len(self.doc_ids)) and k < n_p
            if not short:
                return scores, ids
            k = min(n_p, k * 4)

    def _fused_order(self, c: QueryCandidates, method: str, depth: int, cfg=None) -> tuple[np.ndarray, np.ndarray]:
        cfg = cfg or self.cfg
        fused = F.fuse(method, c.bm25, c.dense, c.positions, bm25_weight=cfg.bm25_weight, rrf_k=cfg.rrf_k)
        o = F.order(fused, c.positions)
        if method == "bm25" and not cfg.union_rescore:
            o = o[c.bm25_rank[o] > 0]
        elif method == "dense" and not cfg.union_rescore:
            o = o[c.dense_rank[o] > 0]
        return o[:depth], fused

    def search(self, queries: Sequence[str], k: int | None = None, fusion: str | None = None) -> list[list[tuple[str, float]]]:
        """Fused top-k per query: [(doc_id, fused_score), ...]."""
        k = int(k or self.cfg.depth)
        method = fusion or self.cfg.fusion
        res = []
        for c in self.candidates(queries, depth=max(k, 1)):
            o, fused = self._fused_order(c, method, k)
            res.append([(self.doc_ids[int(c.positions[i])], float(fused[i])) for i in o])
        return res

    def rank_of(self, queries: Sequence[str], doc_ids: Sequence[str], k: int | None = None,
                fusion: str | None = None) -> list[int | None]:
        """1-based rank of doc_ids[i] for queries[i] in the fused top-k (None if not in it)."""
        if len(queries) != len(doc_ids):
            raise ValueError("queries and doc_ids must align")
        out: list[int | None] = []
        for hits, d in zip(self.search(queries, k, fusion), doc_ids):
            r = next((i + 1 for i, (h, _) in enumerate(hits) if h == d), None)
            out.append(r)
        return out

    def ranking_table(self, query_ids: Sequence[str], cands: Sequence[QueryCandidates], method: str,
                      depth: int | None = None, cfg=None) -> pa.Table:
        """RANKING rows: each query's candidates fused by `method` (fusion weights from
        `cfg`, default this retriever's config), cut to `depth`."""
        cfg = cfg or self.cfg
        depth = int(depth or cfg.depth)
        cols: dict[str, list] = {k: [] for k in RANKING.columns}
        doc_arr = np.asarray(self.doc_ids, dtype=object)
        for qid, c in zip(query_ids, cands):
            o, fused = self._fused_order(c, method, depth, cfg)
            m = o.shape[0]
            cols["query_id"].append(np.full(m, str(qid), dtype=object))
            cols["doc_id"].append(doc_arr[c.positions[o]])
            cols["rank"].append(np.arange(1, m + 1, dtype=np.int64))
            cols["fused_score"].append(fused[o])
            cols["bm25_score"].append(c.bm25[o])
            cols["bm25_rank"].append(c.bm25_rank[o])
            cols["dense_score"].append(c.dense[o])
            cols["dense_rank"].append(c.dense_rank[o])
        def cat(name, dtype):
            parts = cols[name]
            return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
        qids, dids = cat("query_id", object), cat("doc_id", object)
        n = len(qids)
        br, dr = cat("bm25_rank", np.int64), cat("dense_rank", np.int64)
        bs, ds = cat("bm25_score", np.float64), cat("dense_score", np.float64)
        return pa.table({
            "query_id": pa.array(qids, pa.string()), "doc_id": pa.array(dids, pa.string()),
            "rank": pa.array(cat("rank", np.int64), pa.int64()),
            "fused_score": pa.array(cat("fused_score", np.float64), pa.float64()),
            "bm25_score": pa.array(bs, pa.float64(), mask=~np.isfinite(bs)),
            "bm25_rank": pa.array(br, pa.int64(), mask=br == 0),
            "dense_score": pa.array(ds, pa.float64(), mask=~np.isfinite(ds)),
            "dense_rank": pa.array(dr, pa.int64(), mask=dr == 0),
            "fusion": pa.array([method] * n, pa.string()),
        }, schema=RANKING.arrow_schema())


def _query_columns(queries) -> tuple[list[str], list[str]]:
    if isinstance(queries, pa.Table):
        return [str(x) for x in queries.column("query_id").to_pylist()], [str(x) for x in queries.column("text").to_pylist()]
    if hasattr(queries, "columns"):  # pandas
        return [str(x) for x in queries["query_id"]], [str(x) for x in queries["text"]]
    raise TypeError("queries must be a pyarrow Table or DataFrame with query_id and text columns")


def retrieve(documents: pa.Table, queries, cfg=None, work_dir: str | os.PathLike | None = None, *,
             encoder=None, show_progress: bool = False, retriever: HybridRetriever | None = None,
             excluded: Mapping[str, Iterable[str]] | None = None, progress=None) -> RetrievalResult:
    """Fused top-`depth` ranking for every query (see module doc). `cfg`: RunConfig or
    RetrievalConfig. `work_dir`: where `indexes/` persist (None = nothing persisted). `excluded`:
    {query_id: doc ids} never returned for that query (BRIGHT's excluded_ids)."""
    t0 = time.perf_counter()
    rcfg = as_retrieval_config(cfg)
    if retriever is None:
        retriever = HybridRetriever(documents, rcfg, work_dir, encoder=encoder, show_progress=show_progress,
                                    progress=progress)
    qids, qtexts = _query_columns(queries)
    if len(set(qids)) != len(qids):
        raise ValueError("duplicate query_id in queries")
    timings = dict(retriever.timings)
    t = time.perf_counter()
    cands = retriever.candidates(qtexts, rcfg.depth, timings)
    n_excluded = drop_excluded(qids, cands, retriever.doc_ids, excluded)
    timings["search_s"] = time.perf_counter() - t
    t = time.perf_counter()
    table = retriever.ranking_table(qids, cands, rcfg.fusion)
    timings["fusion_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    return RetrievalResult(table, rcfg.fusion, qids, cands, retriever, timings, dict(retriever.reused),
                           dict(retriever.keys), n_excluded, dict(getattr(retriever, "long_texts", {}) or {}))


def store_embeddings(documents: pa.Table, cfg, work_dir: str | os.PathLike, model_id: str,
                     embeddings: np.ndarray) -> Path:
    """Put precomputed document embeddings (corpus order) into the store under the key a
    HybridRetriever with an encoder of this `model_id` looks up, so it reuses them."""
    from .store import ShardedEmbeddings
    rcfg = as_retrieval_config(cfg)
    ids, texts = document_texts(documents, rcfg.include_title)
    if embeddings.shape[0] != len(ids):
        raise ValueError(f"{embeddings.shape[0]} embeddings for {len(ids)} documents")
    ch = corpus_fingerprint(ids, texts)
    d = IndexStore(Path(work_dir) / "indexes").path("emb", embeddings_key(ch, model_id))
    se = ShardedEmbeddings(d, len(ids), embeddings.shape[1], rcfg.shard_size,
                           {"kind": "embeddings", "corpus": ch, "model_id": model_id}).open()
    for i in range(se.n_shards):
        lo, hi = se.shard_range(i)
        se.put_shard(i, embeddings[lo:hi])
    se.finalize()
    return d
