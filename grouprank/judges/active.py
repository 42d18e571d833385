"""Active labelling: an LLM judge judges only the pairs the cheap signals are unsure about.

The cheap signals are a score judge that already ran on every pair (normally the offline local
judge, `JudgeSpec.select_from`) and the first-stage order of each pool. A pair's uncertainty is

    u = 0.5 * u_threshold + 0.5 * u_disagreement
    u_threshold    = max(0, 1 - d / h)   d: distance of the cheap 0-10 score to the nearest grade
                                         threshold (fusion's t_1..t_G), h: half the narrowest gap
    u_disagreement = |percentile of the pair in the cheap judge's ranking
                      - percentile in the first-stage ranking|   (within the query)

A pair next to a grade boundary, or ranked very differently by the two cheap views, is where an
extra opinion can change its label; a pair both call clearly relevant or clearly not is not.
Pairs are taken by decreasing u (ties by a content hash, so the choice is reproducible) until a
budget is spent: pairs (`budget_pairs`), a share of the pool (`budget_fraction`) or estimated
prompt tokens (`budget_prompt_tokens`, chars/4 of query + cut document + the template). The pairs
left out get a JUDGMENTS row with status "skipped" and the reason: never dropped silently, and
missing for that judge in the fusion (imputed, not fabricated).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from .base import JudgeInfo, JudgePool, RowBuilder, local_hash

SKIPPED = "skipped"
TEMPLATE_TOKENS = 150  # the pointwise template's own tokens (instructions + scale), chars/4 estimate


@dataclass
class Selection:
    pool: JudgePool                      # the sub-pool the LLM judge runs on
    uncertainty: dict[tuple[str, str], float]
    skipped: list[tuple[str, str]]
    report: dict = field(default_factory=dict)


def _percentiles(values: list[float]) -> np.ndarray:
    """Within-query position of each value from best (0) to worst (1); ties share the average."""
    from scipy.stats import rankdata
    n = len(values)
    if n <= 1:
        return np.zeros(n)
    r = rankdata(-np.asarray(values, dtype=float), method="average")
    return (r - 1) / (n - 1)


def uncertainties(pool: JudgePool, cheap: dict[tuple[str, str], float],
                  thresholds: list[float]) -> dict[tuple[str, str], float]:
    """u for every pair of the pool that the cheap judge scored (see the module docstring)."""
    t = np.asarray(sorted(thresholds), dtype=float)
    gaps = np.diff(np.concatenate([[0.0], t, [10.0]]))
    h = max(float(gaps.min()) / 2.0, 1e-6)
    out: dict[tuple[str, str], float] = {}
    for qid, dids in pool.pools.items():
        have = [d for d in dids if (qid, d) in cheap]
        if not have:
            continue
        s = [cheap[(qid, d)] for d in have]
        p_cheap = _percentiles(s)
        first_pos = {d: i for i, d in enumerate(dids)}  # pools are in first-stage rank order
        p_first = _percentiles([-first_pos[d] for d in have])
        for i, d in enumerate(have):
            dist = float(np.abs(t - s[i]).min()) if len(t) else 10.0
            u_thr = max(0.0, 1.0 - dist / h)
            u_dis = abs(float(p_cheap[i]) - float(p_first[i]))
            out[(qid, d)] = round(0.5 * u_thr + 0.5 * u_dis, 6)
    return out


def _tie_key(q: str, d: str) -> str:
    return hashlib.sha256(f"{q}\x1f{d}".encode("utf-8")).hexdigest()


def estimate_prompt_tokens(pool: JudgePool, q: str, d: str, max_doc_chars: int) -> int:
    return TEMPLATE_TOKENS + (len(pool.queries[q]) + min(len(pool.docs[d]), max_doc_chars)) // 4


def select(pool: JudgePool, cheap: dict[tuple[str, str], float], thresholds: list[float], *,
           budget_pairs: int | None = None, budget_fraction: float | None = None,
           budget_prompt_tokens: int | None = None, max_doc_chars: int = 3000) -> Selection:
    """The most uncertain pairs within every budget given (no budget: all pairs the cheap judge
    scored). Pairs the cheap judge has no score for (it failed on them) come first: nothing else
    speaks for them."""
    u = uncertainties(pool, cheap, thresholds)
    pairs = pool.pairs()
    unscored = [p for p in pairs if p not in u]
    ranked = unscored + sorted(u, key=lambda p: (-u[p], _tie_key(*p)))
    cap = len(ranked)
    if budget_pairs is not None:
        cap = min(cap, int(budget_pairs))
    if budget_fraction is not None:
        cap = min(cap, int(round(budget_fraction * len(pairs))))
    chosen: list[tuple[str, str]] = []
    tokens = 0
    for q, d in ranked[:cap]:
        if budget_prompt_tokens is not None:
            t = estimate_prompt_tokens(pool, q, d, max_doc_chars)
            if tokens + t > budget_prompt_tokens:
                break
            tokens += t
        chosen.append((q, d))
    keep = set(chosen)
    sub = {q: [d for d in dids if (q, d) in keep] for q, dids in pool.pools.items()}
    sub = {q: v for q, v in sub.items() if v}
    sub_pool = JudgePool({q: pool.queries[q] for q in sub}, pool.docs, sub, pool._flags)
    skipped = [p for p in pairs if p not in keep]
    cut = min((u.get(p, 1.0) for p in chosen), default=None)
    report = {"pairs": len(pairs), "selected": len(chosen), "skipped": len(skipped),
              "calls_saved_fraction": round(len(skipped) / len(pairs), 4) if pairs else 0.0,
              "cheap_unscored": len(unscored), "uncertainty_cut": cut,
              "est_prompt_tokens_selected": (tokens if budget_prompt_tokens is not None else
                                             sum(estimate_prompt_tokens(pool, q, d, max_doc_chars)
                                                 for q, d in chosen)),
              "budget": {"pairs": budget_pairs, "fraction": budget_fraction, "prompt_tokens": budget_prompt_tokens}}
    return Selection(sub_pool, u, skipped, report)


def add_skipped_rows(rows: list[dict], info: JudgeInfo, pool: JudgePool, sel: Selection,
                     passes: int = 1) -> list[dict]:
    """`rows` (the judge's rows on the sub-pool) plus one "skipped" row per pair (and pass) left out."""
    rb = RowBuilder(info, pool)  # skipped pairs are disjoint from the judged sub-pool's by construction
    cut = sel.report.get("uncertainty_cut")
    for q, d in sel.skipped:
        why = (f"active labelling: not selected (uncertainty {sel.uncertainty.get((q, d), 0.0):.3f}"
               + (f" < cut {cut:.3f}" if cut is not None else "") + " within the budget)")
        for p in range(passes):
            rb.add(q, d, pass_index=p, request_hash=local_hash("active-skip", info.judge_id, q, d), status=SKIPPED,
                   error=why)
    return list(rows) + rb.rows
