"""Calibration of the local judge's features to the judges' 0–10 scale: the model, its fit,
and the shipped default.

Model (`Calibration`, `fit_calibration`): a cumulative-logit (proportional-odds) ordinal model
P(grade ≥ k | x) = σ(η − θ_k), η = w·z(x), z the standardised features, fitted by maximum
likelihood (L2 1e-3) on human graded qrels, with w ≥ 0 (monotone: more similarity never lowers
the score; unconstrained, the judged pool's selection bias gives BM25 a negative weight).
The 0–10 score maps η piecewise-linearly through cutpoints c_k ↦ 10·k/(K+1) (2.5, 5, 7.5 for
K = 3, the fusion's default grade thresholds); the cutpoints are the η quantiles that reproduce
the fit data's human grade fractions, so thresholding the score gives the fit collection's grade
distribution (weighted kappa 0.309 vs 0.277 with the model's own θ_k, DL19 cross-fit).

Shipped default (`DEFAULT_CALIBRATIONS`, one per feature set, `FEATURES_BASE` / `FEATURES_MPNET` /
`FEATURES_E5`): fitted on the TREC DL19 passage judged pool (all 43 queries, 9,260 NIST-judged
pairs). Under w ≥ 0 the absolute BM25 score gets weight 0 there (DL19's judged pools are lexically
matched already); BM25 counts through its pool-relative standard score (`bm25_z`, and `hybrid` in
the mpnet set). Evaluating the shipped calibration on DL19 would be in-sample, so
`bench/judge_agreement.py` cross-fits by query (2 folds; each fold's labels come from a calibration
fitted on the other fold's queries only). Measured there: weighted kappa 0.354 (default set: minilm,
bm25, minilm_z, bm25_z; it was 0.309 without the pool-relative features) and 0.361 (mpnet set, MiniLM
pinned to 0; 0.339 with mpnet alone); Spearman 0.435 / 0.445, Kendall 0.389 / 0.399 against NIST
grades. Other collections: refit with
`fit_calibration` on their own graded qrels (keep fit and evaluation queries apart) and pass the
result as `LocalScorer(calibration=...)` or as a judge's `local_calibration` (a JSON file from
`Calibration.to_json`, read by `load_calibration`).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

# Feature columns of the local scorer (`LocalScorer.features`), in calibration order. A name ending in
# RELATIVE is the pool-relative standard score of the feature it extends (`local_scorer.pool_relative`).
# HYBRID is the sum of the dense teacher's and BM25's pool-relative standard scores.
RELATIVE = "_z"
HYBRID = "hybrid"
FEATURES_BASE = ("minilm", "bm25", "minilm_z", "bm25_z")
FEATURES_E5 = ("minilm", "e5", "bm25")
FEATURES_MPNET = ("minilm", "mpnet", "bm25", HYBRID)
FEATURES_MPNET_E5 = ("minilm", "mpnet", "e5", "bm25")


def feature_set(*, mpnet: bool = False, e5: bool = False) -> tuple[str, ...]:
    """The scorer's feature columns for these optional models, in calibration order."""
    return {(False, False): FEATURES_BASE, (False, True): FEATURES_E5,
            (True, False): FEATURES_MPNET, (True, True): FEATURES_MPNET_E5}[(bool(mpnet), bool(e5))]


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
    excluded: list[str] = field(default_factory=list)  # features pinned to weight 0 by the fit

    def _identity(self) -> dict:
        d = asdict(self)
        if not d["excluded"]:
            d.pop("excluded")  # calibrations from before the field keep their fingerprint
        return d

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
        return hashlib.sha256(json.dumps(self._identity(), sort_keys=True).encode()).hexdigest()[:12]

    def to_json(self) -> str:
        return json.dumps(self._identity(), indent=1)

    @classmethod
    def from_json(cls, s: str) -> "Calibration":
        d = json.loads(s)
        d["features"] = tuple(d["features"])
        return cls(**d)


def _unpack(p: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights, ordered thresholds θ_k = t0 + Σ softplus(δ), raw δ) from the flat parameters."""
    w = p[:d]
    t0 = p[d]
    dl = p[d + 1:]
    sp = np.log1p(np.exp(dl))
    th = np.concatenate([[t0], t0 + np.cumsum(sp)])
    return w, th, dl


def _nll_gradient(params: np.ndarray, Z: np.ndarray, y: np.ndarray, K: int, l2: float) -> np.ndarray:
    """Gradient of the mean negative log-likelihood of the cumulative-logit model (+ L2 on w)."""
    n, d = Z.shape
    w, th, dl = _unpack(params, d)
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
    sig_dl = _sigmoid(dl)
    g_dl = np.array([grad_th[j + 1:].sum() * sig_dl[j] for j in range(len(dl))])
    return np.concatenate([grad_w, [grad_th.sum()], g_dl])


def fit_calibration(X: np.ndarray, grades: Sequence[int], features: Sequence[str], *, l2: float = 1e-3,
                    iters: int = 1500, lr: float = 0.1, nonneg: bool = True, cutpoints: str = "quantile",
                    source: str = "", exclude: Sequence[str] = ()) -> Calibration:
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
        median of the predicted grade distribution; under-predicts rare top grades).
    exclude: features whose weight is pinned to 0 (still computed and shown in rationales), e.g.
        a feature that lowered the cross-fitted agreement on the fit collection."""
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
    unknown = [f for f in exclude if f not in tuple(features)]
    if unknown:
        raise ValueError(f"exclude names features {unknown} that are not in {tuple(features)}")
    pinned = np.array([f in set(exclude) for f in features], dtype=bool)
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

    n = len(y)
    for it in range(1, iters + 1):
        grad = _nll_gradient(params, Z, y, K, l2)
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad ** 2
        params = params - lr * (m / (1 - b1 ** it)) / (np.sqrt(v / (1 - b2 ** it)) + eps)
        if nonneg:
            params[:d] = np.maximum(params[:d], 0.0)
        params[:d][pinned] = 0.0
    w, th, _ = _unpack(params, d)
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
                       source=source, n_fit=int(n), excluded=[f for f in features if f in set(exclude)])


# Fitted by `bench/judge_agreement.py --collection trec_dl19_passage --fit-calibration`: fit_calibration
# (non-negative weights, quantile cutpoints) on LocalScorer features of all 43 TREC DL19 passage
# queries (9,260 NIST-judged pairs, grades 0-3). The BM25 weight came out 0 under the
# non-negativity constraint (unconstrained it is negative on this judged pool).
_DL19 = ("trec_dl19_passage: all 43 judged queries, 9260 NIST-judged pairs (grades 0-3); "
         "features by LocalScorer")
_DL19_MPNET = ("trec_dl19_passage: all 43 judged queries, 9260 NIST-judged pairs (grades 0-3); features "
               "by LocalScorer(use_mpnet=True); exclude=('minilm', 'bm25')")
DEFAULT_CALIBRATIONS: dict[tuple[str, ...], Calibration] = {
    # bench/judge_agreement.py --fit-calibration --mpnet off --exclude (nothing pinned): minilm, bm25 and their
    # pool-relative standard scores. The absolute BM25 weight comes out 0, its pool-relative one positive.
    FEATURES_BASE: Calibration(
        features=FEATURES_BASE,
        mean=[0.42693128074566106, 0.40227382383707605, 0.0, 0.0],
        std=[0.20426725951253033, 0.2562426547417551, 1.0000000000000013, 1.0000000000000073],
        weights=[0.3315375055723428, 0.0, 0.7950563685119694, 0.07132157537544712],
        thresholds=[0.3188104648647758, 1.2693958470478217, 2.9983122536933493],
        cutpoints=[0.19927121086469085, 0.7316848965157225, 1.5860653238006697],
        source=_DL19, n_fit=9260),
    FEATURES_E5: Calibration(
        features=FEATURES_E5, mean=[0.42693126858506236, 0.8534171495530312, 0.4022738238370768],
        std=[0.20426725521476535, 0.043097193208279976, 0.2562426547417555],
        weights=[0.5178879295100359, 0.5876020321370738, 0.0],
        thresholds=[0.3317397894765352, 1.273234766524436, 2.9625615771135974],
        cutpoints=[0.2530061365556171, 0.7160307202496167, 1.4660906015987014], source=_DL19, n_fit=9260),
    # bench/judge_agreement.py --fit-calibration --mpnet on --exclude minilm bm25 (see _DL19_MPNET): mpnet's cosine
    # and `hybrid` (mpnet's + BM25's pool-relative standard scores); MiniLM pinned to 0, so nothing of the MiniLM
    # student shapes the labels (MiniLM and BM25 are still computed and shown in each judgment's rationale).
    # Cross-fitted by query on DL19: weighted kappa 0.3606 (mpnet alone 0.3387, bm25+minilm 0.3086).
    FEATURES_MPNET: Calibration(
        features=FEATURES_MPNET,
        mean=[0.42693128074566106, 0.4254480646896532, 0.40227382383707605, 0.0],
        std=[0.20426725951253033, 0.2103075400550875, 0.2562426547417551, 1.7447995144240074],
        weights=[0.0, 0.7620694875535393, 0.0, 0.48447234977852166],
        thresholds=[0.33233937962371274, 1.3060044584958286, 3.051364431590472],
        cutpoints=[0.20391865835439957, 0.7651593241744097, 1.665616051540454],
        source=_DL19_MPNET, n_fit=9260, excluded=["minilm", "bm25"]),
}


def load_calibration(path: str | os.PathLike) -> Calibration:
    """A calibration file (`Calibration.to_json`); the scorer checks it fits its features."""
    try:
        return Calibration.from_json(Path(path).read_text())
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"local judge calibration {path}: not a calibration file ({type(e).__name__}: {e})") from e


def default_calibration(features: Sequence[str]) -> Calibration:
    cal = DEFAULT_CALIBRATIONS.get(tuple(features))
    if cal is None:
        raise KeyError(f"no default calibration for features {tuple(features)}")
    return cal
