"""Fuse the judges' raw outputs (the JUDGMENTS table) into graded relevance (the LABELS table).

Step 1 — one value per (judge, query, document)
    Only rows with status "ok" count. Score judges (kinds pointwise, groupwise, local) give a
    0–10 score; several passes (groupwise shuffles) are averaged. The listwise judge gives a
    rank (1 = best); several passes are averaged. A pair with no ok row for a judge is *missing*
    for that judge (its raw rows, with the failure reason, stay in the judgments table).

Step 2 — per-judge ranks
    Within each query, each judge's values are ranked (best = 1), ties get the average rank
    (the `scipy.stats.rankdata(method="average")` convention). Only the pairs the judge has a
    value for are ranked, so a judge that failed on some documents ranks the rest 1..n_ok.

Step 3 — fusion (`method`)
    ``rank`` (default, the GroupRank paper's teacher fusion generalised to any set of judges):
        S(q, d) = Σ_j w_j · (−log r_j(q, d)),    Σ_j w_j = 1.
        With one pointwise judge (weight β) and one listwise judge (weight 1−β) this is the
        paper's S = −β·log(rank_pointwise) − (1−β)·log(rank_listwise), β = 0.5.
        A pair missing for judge j gets, for that judge, the mean of −log r_j over the pairs j did
        rank in that query (mean imputation: the missing judge neither lifts nor sinks the pair
        on average; it does not reward failures the way dropping the term would, since every
        term is ≤ 0). A judge that ranked nothing in a query is left out there and the remaining
        weights renormalised.
    ``score_mean``:
        S(q, d) = Σ_j w_j · v_j(q, d) / Σ_{j has (q,d)} w_j   (weights renormalised over the
        judges that have the pair), with v_j the 0–10 score; a listwise judge's rank r among n
        ranked pairs becomes the pseudo-score 10·(n − r)/(n − 1) (10 when n = 1).
    Weights (`resolve_weights`): explicit `weight`s of the judge specs, normalised to sum 1;
    otherwise, when the judges are exactly one pointwise-like judge (pointwise/local) and one
    listwise judge, β and 1−β; otherwise equal weights.
    `fused_rank` is the rank of S within the query (1 = best; ties share the smallest rank).

Step 4 — graded scale 0..G (default G = 3), the documented rule
    *Order from the fusion, proportions from the absolute scores.* Ranks alone cannot tell a
    query with many relevant documents from one with none, so the grade distribution of each
    query is taken from the judges' absolute 0–10 scores, and which documents receive which grade
    from the fused order:
      a) anchor(q, d) = weighted mean (weights renormalised over the judges that have the pair) of
         the score judges' 0–10 values (listwise ranks carry no absolute level and are left out);
      b) anchor grade = number of thresholds t_1 < … < t_G that anchor reaches (default: equal
         widths on the 0–10 scale, t_k = 10·k/(G+1): 2.5, 5, 7.5 for G = 3, matching the
         judge prompts' anchors: ≥7.5 "very/extremely helpful", 5–7.5 "somewhat", 2.5–5
         "marginal", below "barely/not");
      c) per query, n_{≥k} = round(n · fraction of anchored pairs with anchor grade ≥ k);
      d) walking down the fused ranking, the first n_{≥G} documents get G, the next
         n_{≥G−1} − n_{≥G} get G−1, … , the rest 0; documents tied in S share the grade of the
         first of them (the grade is a non-increasing function of the fused score).
    Consequences (tested): with a single score judge, or with `score_mean` over score judges only,
    the rule reduces to plain thresholding of the mean 0–10 score; grades never contradict the
    fused order; a query whose documents all score low gets only low grades.
    Rank-only fallback (no score judge, e.g. a lone listwise judge): there is no absolute level,
    so fixed fractions of each query's pool are used (`rank_only_fractions`, default
    n_{≥1}, n_{≥2}, n_{≥3} = 40 %, 20 %, 10 % of the pool for G = 3, halving per grade); a
    warning says so. Prefer adding a score judge.

Failed pairs, explicitly
    * missing for some judges: handled by the imputation/renormalisation above; `n_judges`
      in LABELS counts the judges that actually judged the pair and `judge_scores` shows null for
      the others;
    * missing for every judge: no label is produced (LABELS has no row for the pair; a grade of
      0 would be a fabricated negative). `fuse_labels` reports them.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

log = logging.getLogger("grouprank.judges.fusion")

SCORE_KINDS = ("pointwise", "groupwise", "local")
RANK_KINDS = ("listwise",)

__all__ = ["fuse_labels", "FUSION_METHODS", "rank_fusion", "score_mean_fusion", "judge_values", "agreement_weights",
           "average_ranks", "default_thresholds", "grade_from_anchor", "assign_grades", "resolve_weights",
           "FusionReport", "SCORE_KINDS", "RANK_KINDS"]


# --------------------------------------------------------------------------------------------
# small pieces (public: tested by hand)
# --------------------------------------------------------------------------------------------
def average_ranks(values: Sequence[float], *, higher_is_better: bool = True) -> np.ndarray:
    """1-based ranks, best = 1, ties get the average of the ranks they span."""
    from scipy.stats import rankdata
    v = np.asarray(values, dtype=float)
    return rankdata(-v if higher_is_better else v, method="average")


def min_ranks(values: Sequence[float]) -> np.ndarray:
    """1-based competition ranks (higher value = better; ties share the smallest rank)."""
    from scipy.stats import rankdata
    return rankdata(-np.asarray(values, dtype=float), method="min").astype(np.int64)


def default_thresholds(grade_scale: int = 3, top: float = 10.0) -> list[float]:
    """Equal-width thresholds on the 0..top scale: t_k = top·k/(G+1), k = 1..G."""
    G = int(grade_scale)
    if G < 1:
        raise ValueError("grade_scale must be >= 1")
    return [top * k / (G + 1) for k in range(1, G + 1)]


def grade_from_anchor(score: float, thresholds: Sequence[float]) -> int:
    """Number of thresholds reached (score >= t_k)."""
    return int(sum(1 for t in thresholds if score >= t))


def default_rank_only_fractions(grade_scale: int = 3) -> list[float]:
    """Fraction of a query's pool with grade >= k, k = 1..G: 40 %, halving per grade."""
    return [0.4 / (2 ** (k - 1)) for k in range(1, int(grade_scale) + 1)]


def assign_grades(fused: Sequence[float], counts_at_least: Sequence[int]) -> np.ndarray:
    """Grades for one query from fused scores (higher = better) and the number of documents
    that must reach each grade (`counts_at_least[k-1]` = n_{>=k}, non-increasing in k).
    Walk down the fused order; tied documents share the grade of the first of them."""
    s = np.asarray(fused, dtype=float)
    n = len(s)
    G = len(counts_at_least)
    c = [min(n, max(0, int(x))) for x in counts_at_least]
    for k in range(1, G):  # enforce n_{>=k} >= n_{>=k+1}
        c[k] = min(c[k], c[k - 1])
    order = np.argsort(-s, kind="mergesort")
    grades = np.zeros(n, dtype=np.int64)
    for pos, idx in enumerate(order):
        grades[idx] = sum(1 for k in range(G) if pos < c[k])
    # ties: share the grade of the first (best-placed) member
    pos = 0
    while pos < n:
        j = pos
        while j + 1 < n and s[order[j + 1]] == s[order[pos]]:
            j += 1
        if j > pos:
            g = grades[order[pos]]
            grades[order[pos:j + 1]] = g
        pos = j + 1
    return grades


def resolve_weights(judges: Mapping[str, str], weights: Mapping[str, float | None] | None = None,
                    beta: float = 0.5) -> dict[str, float]:
    """judges: judge_id -> kind. Returns weights summing to 1 (see module docstring)."""
    ids = list(judges)
    if not ids:
        return {}
    weights = dict(weights or {})
    explicit = {j: float(w) for j, w in weights.items() if j in judges and w is not None}
    if explicit:
        for j, w in explicit.items():
            if w < 0:
                raise ValueError(f"judge {j!r}: negative fusion weight {w}")
        rest = [j for j in ids if j not in explicit]
        total = sum(explicit.values())
        if rest:
            if total >= 1.0:
                raise ValueError("explicit fusion weights sum to >= 1 but some judges have none")
            share = (1.0 - total) / len(rest)
            out = {**explicit, **{j: share for j in rest}}
        else:
            if total <= 0:
                raise ValueError("fusion weights sum to 0")
            out = {j: w / total for j, w in explicit.items()}
        return {j: out[j] for j in ids}
    kinds = [judges[j] for j in ids]
    if len(ids) == 2 and sorted(k if k != "local" else "pointwise" for k in kinds) == ["listwise", "pointwise"]:
        pw = ids[0] if kinds[0] in ("pointwise", "local") else ids[1]
        lw = ids[1] if pw == ids[0] else ids[0]
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta={beta} outside [0, 1]")
        return {pw: float(beta), lw: 1.0 - float(beta)}
    return {j: 1.0 / len(ids) for j in ids}


# --------------------------------------------------------------------------------------------
# step 1: per-judge values
# --------------------------------------------------------------------------------------------
def _as_frame(judgments) -> pd.DataFrame:
    if isinstance(judgments, pd.DataFrame):
        return judgments
    return judgments.to_pandas()


def judge_values(judgments) -> pd.DataFrame:
    """One row per (judge_id, query_id, doc_id) with `kind`, `value` (mean 0–10 score, or mean
    listwise rank), `n_ok` and `n_failed` passes. Pairs with no ok pass have value NaN."""
    df = _as_frame(judgments)
    if df.empty:
        return pd.DataFrame(columns=["judge_id", "kind", "query_id", "doc_id", "value", "n_ok", "n_failed"])
    df = df.copy()
    df["_ok"] = df["status"] == "ok"
    df["_raw"] = np.where(df["kind"].isin(RANK_KINDS), df["rank"].astype(float), df["score"].astype(float))
    df.loc[~df["_ok"], "_raw"] = np.nan
    g = df.groupby(["judge_id", "query_id", "doc_id"], sort=True, dropna=False)
    out = g.agg(kind=("kind", "first"), value=("_raw", "mean"), n_ok=("_ok", "sum"),
                n_rows=("_ok", "size")).reset_index()
    out["n_failed"] = out["n_rows"] - out["n_ok"]
    out.loc[out["n_ok"] == 0, "value"] = np.nan
    return out.drop(columns=["n_rows"])


# --------------------------------------------------------------------------------------------
# weights from agreement with human labels
# --------------------------------------------------------------------------------------------
WEIGHT_FLOOR = 1e-3  # keeps a judge with no agreement as a tie-breaker only (never a 0 total)


def agreement_weights(judgments, qrels, min_pairs: int = 30) -> tuple[dict[str, float] | None, dict]:
    """Fusion weights from each judge's agreement with human labels on the calibration set.

    Calibration set: the judged pairs of every query that has at least one relevant (grade > 0)
    qrels row; a judged document absent from that query's qrels counts as grade 0 (the BEIR /
    TREC convention for unjudged pool documents). Agreement: Spearman's rho between the judge's
    within-query position (its percentile; listwise ranks and 0-10 scores alike) and the human
    grade, pooled over the calibration pairs the judge has a value for. Weight = max(rho, 0) +
    WEIGHT_FLOOR, normalised. Returns (None, report) when no judge has `min_pairs` calibration
    pairs with two distinct grades (then the configured weight rule applies); a judge below
    `min_pairs` while others reach it gets WEIGHT_FLOOR: a judge whose agreement could not be
    measured (e.g. an active-labelling judge whose answers mostly failed to parse) never outweighs
    one that was measured."""
    from scipy.stats import rankdata, spearmanr
    vals = judge_values(judgments)
    q = qrels.to_pandas() if hasattr(qrels, "to_pandas") else pd.DataFrame(qrels)
    report: dict = {"calibration_queries": 0, "judges": {}}
    if vals.empty or q.empty:
        report["fallback"] = "no judged pair has human labels"
        return None, report
    q = q.assign(query_id=q["query_id"].astype(str), doc_id=q["doc_id"].astype(str))
    rel_q = set(q.loc[q["grade"] > 0, "query_id"])
    human = {(a, b): int(g) for a, b, g in zip(q["query_id"], q["doc_id"], q["grade"])}
    v = vals[vals["query_id"].astype(str).isin(rel_q) & vals["value"].notna()].copy()
    report["calibration_queries"] = int(v["query_id"].nunique())
    rho: dict[str, float] = {}
    for jid, block in v.groupby("judge_id", sort=True):
        rank_kind = block["kind"].iloc[0] in RANK_KINDS
        pos, grades = [], []
        for _, qb in block.groupby("query_id", sort=False):
            x = qb["value"].to_numpy(dtype=float)
            r = rankdata(x if rank_kind else -x, method="average")
            pos.extend(((r - 1) / max(len(x) - 1, 1)).tolist())
            grades.extend(human.get((str(a), str(b)), 0) for a, b in zip(qb["query_id"], qb["doc_id"]))
        info = {"pairs": len(pos), "relevant": int(sum(1 for g in grades if g > 0))}
        if len(pos) >= min_pairs and len(set(grades)) > 1:
            r = float(spearmanr(-np.asarray(pos), grades).statistic)
            info["spearman"] = round(r, 4) if np.isfinite(r) else None
            if np.isfinite(r):
                rho[jid] = r
        report["judges"][jid] = info
    if not rho:
        report["fallback"] = f"no judge has {min_pairs} calibration pairs with relevant and non-relevant documents"
        return None, report
    raw = {j: max(r, 0.0) + WEIGHT_FLOOR for j, r in rho.items()}
    for j in sorted(set(report["judges"]) | set(vals["judge_id"])):  # not measurable: a tie-breaker only
        raw.setdefault(j, WEIGHT_FLOOR)
    total = sum(raw.values())
    w = {j: x / total for j, x in sorted(raw.items())}
    for j, x in w.items():
        report["judges"].setdefault(j, {"pairs": 0})["weight"] = round(x, 6)
    return w, report


# --------------------------------------------------------------------------------------------
# the fusion
# --------------------------------------------------------------------------------------------
@dataclass
class FusionReport:
    method: str
    weights: dict[str, float]
    grade_scale: int
    thresholds: list[float]
    pairs: int = 0
    labelled: int = 0
    unlabelled: list[tuple[str, str]] = field(default_factory=list)  # failed for every judge
    partially_judged: int = 0  # labelled, but missing for at least one judge
    rank_only_queries: int = 0
    grade_counts: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"method": self.method, "weights": self.weights, "grade_scale": self.grade_scale,
                "thresholds": self.thresholds, "pairs": self.pairs, "labelled": self.labelled,
                "unlabelled": len(self.unlabelled), "partially_judged": self.partially_judged,
                "rank_only_queries": self.rank_only_queries,
                "grade_counts": {str(k): v for k, v in sorted(self.grade_counts.items())}}


def rank_fusion(V: dict[str, np.ndarray], have: dict[str, np.ndarray], kinds: Mapping[str, str],
                w: Mapping[str, float]) -> np.ndarray:
    """S = Σ_j w_j · (−log r_j) / Σ w_j over the judges that ranked something in the query; a pair
    judge j missed gets the mean of j's terms (mean imputation)."""
    n = len(next(iter(V.values()))) if V else 0
    S, wsum = np.zeros(n), 0.0
    for j, v in V.items():
        m = have[j]
        if not m.any():
            continue
        r = np.full(n, np.nan)
        r[m] = average_ranks(v[m], higher_is_better=kinds[j] not in RANK_KINDS)
        t = -np.log(r)
        t[~m] = t[m].mean()
        S += w[j] * t
        wsum += w[j]
    return S / wsum if wsum > 0 else S


def score_mean_fusion(V: dict[str, np.ndarray], have: dict[str, np.ndarray], kinds: Mapping[str, str],
                      w: Mapping[str, float]) -> np.ndarray:
    """S = Σ_j w_j · v_j / Σ_{j has the pair} w_j; a listwise rank r of k becomes 10·(k − r)/(k − 1)."""
    n = len(next(iter(V.values()))) if V else 0
    num, den = np.zeros(n), np.zeros(n)
    for j, v in V.items():
        m = have[j]
        if not m.any():
            continue
        v = v.copy()
        if kinds[j] in RANK_KINDS:
            r = average_ranks(v[m], higher_is_better=False)
            k = m.sum()
            v[m] = 10.0 * (k - r) / (k - 1) if k > 1 else 10.0
        num[m] += w[j] * v[m]
        den[m] += w[j]
    return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


FUSION_METHODS = {"rank": rank_fusion, "score_mean": score_mean_fusion}


def _anchor(V, have, w, score_judges, n: int) -> np.ndarray:
    """Weighted mean of the score judges' 0–10 values per pair (NaN where none has it)."""
    num, den = np.zeros(n), np.zeros(n)
    for j in score_judges:
        m = have[j]
        num[m] += w[j] * V[j][m]
        den[m] += w[j]
    return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan) if score_judges else np.full(n, np.nan)


def _grade_counts(anchor: np.ndarray, thr: Sequence[float], frac: Sequence[float], report: "FusionReport") -> list[int]:
    """n_{≥k} for k = 1..G: from the anchors' grade proportions, else the rank-only fractions."""
    nk = anchor.size
    anchored = ~np.isnan(anchor)
    if anchored.any():
        ag = np.array([grade_from_anchor(x, thr) for x in anchor[anchored]])
        return [int(round(nk * float((ag >= k).mean()))) for k in range(1, len(thr) + 1)]
    report.rank_only_queries += 1
    return [int(round(nk * f)) for f in frac]


def _fuse_query(qid, block: pd.DataFrame, fuse, kinds, w, judge_ids, score_judges, thr, frac, method_name: str,
                report: "FusionReport") -> list[dict]:
    """LABELS records of one query (pairs no judge has are reported, not labelled)."""
    doc_ids = [d for _, d in block.index]
    n = len(doc_ids)
    report.pairs += n
    V = {j: block[j].to_numpy(dtype=float) for j in judge_ids}
    have = {j: ~np.isnan(V[j]) for j in judge_ids}
    keep = np.zeros(n, dtype=bool)
    for j in judge_ids:
        keep |= have[j]
    report.unlabelled += [(qid, d) for d, k in zip(doc_ids, keep) if not k]
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        return []
    S_k = fuse(V, have, kinds, w)[idx]
    grades = assign_grades(S_k, _grade_counts(_anchor(V, have, w, score_judges, n)[idx], thr, frac, report))
    franks = min_ranks(S_k)
    records = []
    for pos, i in enumerate(idx):
        js = {j: (None if np.isnan(V[j][i]) else round(float(V[j][i]), 6)) for j in w}
        n_j = sum(1 for j in judge_ids if have[j][i])
        report.partially_judged += int(n_j < len(judge_ids))
        g = int(grades[pos])
        report.grade_counts[g] = report.grade_counts.get(g, 0) + 1
        records.append({"query_id": str(qid), "doc_id": str(doc_ids[i]), "grade": g,
                        "fused_score": float(S_k[pos]), "fused_rank": int(franks[pos]),
                        "method": method_name, "n_judges": int(n_j), "judge_scores": json.dumps(js, sort_keys=True)})
    return records


def _checked_scale(grade_scale: int, thresholds, rank_only_fractions) -> tuple[int, list[float], list[float]]:
    G = int(grade_scale)
    thr = list(thresholds) if thresholds is not None else default_thresholds(G)
    if len(thr) != G or any(b <= a for a, b in zip(thr, thr[1:])):
        raise ValueError(f"need {G} strictly increasing thresholds, got {thr}")
    frac = list(rank_only_fractions) if rank_only_fractions is not None else default_rank_only_fractions(G)
    if len(frac) != G:
        raise ValueError(f"need {G} rank_only_fractions, got {frac}")
    return G, thr, frac


def fuse_labels(judgments, *, method: str = "rank", weights: Mapping[str, float | None] | None = None,
                beta: float = 0.5, grade_scale: int = 3, thresholds: Sequence[float] | None = None,
                rank_only_fractions: Sequence[float] | None = None,
                judges: Iterable[str] | None = None) -> tuple[pa.Table, FusionReport]:
    """JUDGMENTS (Arrow table or DataFrame) -> (LABELS Arrow table, FusionReport).

    method: a key of `FUSION_METHODS` ("rank": −log-rank fusion, "score_mean"); weights:
    judge_id -> weight (None or missing: see `resolve_weights`); judges: restrict to these judge
    ids (default: all present)."""
    from data_schemas import LABELS

    if method not in FUSION_METHODS:
        raise ValueError(f"unknown fusion method {method!r} ({' | '.join(FUSION_METHODS)})")
    G, thr, frac = _checked_scale(grade_scale, thresholds, rank_only_fractions)
    vals = judge_values(judgments)
    if judges is not None:
        vals = vals[vals["judge_id"].isin(set(judges))]
    kinds = dict(vals.groupby("judge_id")["kind"].first()) if len(vals) else {}
    w = resolve_weights(kinds, weights, beta)
    report = FusionReport(method="single" if len(w) == 1 else method, weights=w, grade_scale=G, thresholds=thr)
    if vals.empty:
        return LABELS.from_records([]), report
    # wide: rows (query, doc), one value column per judge; pivot_table drops all-NaN rows: re-add every judged pair
    wide = vals.pivot_table(index=["query_id", "doc_id"], columns="judge_id", values="value",
                            aggfunc="first", dropna=False)
    wide = wide.reindex(pd.MultiIndex.from_frame(vals[["query_id", "doc_id"]].drop_duplicates()))
    judge_ids = [j for j in w if j in wide.columns]
    for j in w:
        if j not in wide.columns:
            wide[j] = np.nan
    score_judges = [j for j in judge_ids if kinds[j] in SCORE_KINDS]
    method_name = "single" if len(w) == 1 else ("rank_fusion" if method == "rank" else "score_mean")
    records: list[dict] = []
    for qid, block in wide.groupby(level=0, sort=True):
        records += _fuse_query(qid, block, FUSION_METHODS[method], kinds, w, judge_ids, score_judges, thr, frac,
                               method_name, report)
    report.labelled = len(records)
    if report.rank_only_queries:
        log.warning("%d queries had no score judge: grades from fixed rank fractions %s (no absolute level)",
                    report.rank_only_queries, frac)
    if report.unlabelled:
        log.warning("%d pairs failed for every judge: no label produced", len(report.unlabelled))
    return LABELS.from_records(records), report
