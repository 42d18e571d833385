"""Before/after evaluation of a dense retriever on held-out queries.

The whole corpus is encoded once per model (the expensive part) and persisted in the retrieval
stage's index store (`<work_dir>/indexes/emb-<key>`, key = corpus fingerprint + encoder model id,
`grouprank.first_stage.store`), so the base model's embeddings made by the retrieval stage are
reused as they are, and a rerun of an evaluation encodes nothing. Search is exact inner product
(numpy; the vectors are L2-normalised, so cosine), and the run is scored with the project's
`grouprank.evaluation.metrics.evaluate` (ir-measures; nDCG with trec_eval's linear gain).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from grouprank.text import document_texts, inner_product_top_k

log = logging.getLogger(__name__)


def exact_search(q: np.ndarray, d: np.ndarray, k: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Top-k inner product: (scores [nq, k], indices [nq, k]), best first; ties by index."""
    idx, scores = inner_product_top_k(q, np.asarray(d, dtype=np.float32), k, chunk)
    return scores, idx


def run_frame(query_ids: Sequence[str], doc_ids: Sequence[str], scores: np.ndarray, idx: np.ndarray) -> pd.DataFrame:
    d = np.asarray(doc_ids, dtype=object)
    nq, k = idx.shape
    return pd.DataFrame({"query_id": np.repeat(np.asarray(query_ids, dtype=object), k),
                         "doc_id": d[idx.reshape(-1)], "score": scores.reshape(-1).astype(float)})


class DenseEvaluator:
    """nDCG@10 (and friends) of a dense model on fixed queries/qrels over a fixed corpus.

    documents: DOCUMENTS table (or DataFrame with doc_id, title, text); queries: {query_id: text}
    (only those with qrels are scored); qrels: DataFrame/Arrow (query_id, doc_id, grade).
    `store_root`: `<work_dir>/indexes` to persist/reuse corpus embeddings (None: keep in memory).
    Encoding follows the retrieval stage's encoder settings (`backend`, `max_seq_length`, prompts,
    `include_title`) so its persisted base-model embeddings are found. `excluded`: query id -> doc
    ids that must not appear in any run (BRIGHT's `excluded_ids`); they are removed before a run is
    returned, scored or written, and the run still holds `depth` documents per query."""

    def __init__(self, documents, queries: Mapping[str, str], qrels, *, include_title: bool = True,
                 measures: Sequence[str] = ("nDCG@10", "R@100"), depth: int = 100, backend: str = "torch",
                 max_seq_length: int | None = 256, batch_size: int = 64, query_prompt: str | None = None,
                 document_prompt: str | None = None, store_root: str | Path | None = None,
                 cache_dir: str | Path | None = None, shard_size: int = 8192,
                 excluded: Mapping[str, set[str]] | None = None):
        import pyarrow as pa
        from grouprank.first_stage.store import corpus_fingerprint
        if isinstance(documents, pd.DataFrame):
            documents = pa.Table.from_pandas(documents, preserve_index=False)
        self.doc_ids, self.texts = document_texts(documents, include_title)
        self.corpus_hash = corpus_fingerprint(self.doc_ids, self.texts)
        q = qrels.to_pandas() if hasattr(qrels, "to_pandas") else pd.DataFrame(qrels)
        self.qrels = pd.DataFrame({"query_id": q["query_id"].astype(str), "doc_id": q["doc_id"].astype(str),
                                   "grade": q["grade"].astype(int)})
        judged = set(self.qrels.loc[self.qrels["grade"] > 0, "query_id"])
        self.queries = {str(k): str(v) for k, v in queries.items() if str(k) in judged}
        missing = judged - set(self.queries)
        if missing:
            log.warning("%d judged queries have no text and are scored 0: e.g. %s", len(missing), sorted(missing)[:3])
        self.measures = list(measures)
        self.depth = int(depth)
        self.backend = backend
        self.max_seq_length = max_seq_length
        self.batch_size = int(batch_size)
        self.query_prompt, self.document_prompt = query_prompt, document_prompt
        self.store_root = Path(store_root) if store_root is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.shard_size = int(shard_size)
        self.excluded = {str(q): set(map(str, ds)) for q, ds in (excluded or {}).items() if ds}
        self.last: dict[str, Any] = {}

    @property
    def n_queries(self) -> int:
        return int(self.qrels["query_id"].nunique())

    def encoder(self, model: str, fresh: bool = False):
        from grouprank.first_stage.dense import DenseEncoder, forget_model, resolve_model
        if fresh:
            forget_model(resolve_model(model))
        return DenseEncoder(model, self.backend, query_prompt=self.query_prompt,
                            document_prompt=self.document_prompt, batch_size=self.batch_size,
                            max_seq_length=self.max_seq_length, cache_dir=self.cache_dir)

    def corpus_embeddings(self, enc, st_model=None) -> tuple[np.ndarray, bool]:
        """(embeddings, reused). `st_model`: an in-memory SentenceTransformer with the same
        weights as `enc`'s model (saves loading it again; torch backend only)."""
        from grouprank.first_stage.store import IndexStore, encode_resumable, stable_key
        fn = (lambda ts: self._st_encode(st_model, ts, self.document_prompt)) \
            if (st_model is not None and self.backend == "torch") else \
            (lambda ts: enc.encode_documents(ts, show_progress=False))
        if self.store_root is None:
            return np.asarray(fn(self.texts), dtype=np.float32), False
        key = stable_key("emb", self.corpus_hash, enc.model_id)
        store = IndexStore(self.store_root)
        d = store.path("emb", key)
        reused = store.is_complete("emb", key)
        dim = int(st_model.get_embedding_dimension()) if (st_model is not None and self.backend == "torch") \
            else enc.dimension
        emb = encode_resumable(d, self.texts, fn, dim, self.shard_size,
                               meta={"kind": "embeddings", "corpus": self.corpus_hash, "model_id": enc.model_id})
        return np.asarray(emb, dtype=np.float32), reused

    def _st_encode(self, st, texts: list[str], prompt: str | None) -> np.ndarray:
        if prompt:
            texts = [prompt + t for t in texts]
        old = st.max_seq_length
        if self.max_seq_length:
            st.max_seq_length = int(self.max_seq_length)
        try:
            e = st.encode(list(texts), batch_size=self.batch_size, show_progress_bar=False,
                          convert_to_numpy=True, normalize_embeddings=True)
        finally:
            st.max_seq_length = old
        return np.asarray(e, dtype=np.float32)

    def run(self, model: str, *, st_model=None, fresh: bool = False) -> pd.DataFrame:
        """Top-`depth` run for the evaluation queries (query_id, doc_id, score)."""
        t0 = time.perf_counter()
        enc = self.encoder(model, fresh=fresh)
        D, reused = self.corpus_embeddings(enc, st_model)
        t1 = time.perf_counter()
        qids = sorted(self.queries)
        qtexts = [self.queries[q] for q in qids]
        if st_model is not None and self.backend == "torch":
            Q = self._st_encode(st_model, qtexts, self.query_prompt)
        else:
            Q = enc.encode_queries(qtexts, show_progress=False)
        t2 = time.perf_counter()
        extra = max((len(self.excluded.get(q, ())) for q in qids), default=0)
        S, I = exact_search(Q, D, min(self.depth + extra, len(self.doc_ids)))
        self.last = {"corpus_encode_s": round(t1 - t0, 3), "corpus_reused": bool(reused),
                     "query_encode_s": round(t2 - t1, 3), "search_s": round(time.perf_counter() - t2, 3),
                     "model_id": enc.model_id}
        run = run_frame(qids, self.doc_ids, S, I)
        if self.excluded:
            from grouprank.evaluation.metrics import remove_excluded
            n0 = len(run)
            run = remove_excluded(run, self.excluded)
            self.last["excluded_removed"] = n0 - len(run)
        return run.groupby("query_id", sort=False).head(self.depth).reset_index(drop=True)

    def evaluate(self, model: str, *, st_model=None, fresh: bool = False) -> dict[str, float]:
        """{measure: value} for `model` (path or name). `fresh=True` when the model at that path
        was (re)written in this process."""
        from grouprank.evaluation.metrics import evaluate
        run = self.run(model, st_model=st_model, fresh=fresh)
        return {k: float(v) for k, v in evaluate(run, self.qrels, self.measures).items()}
