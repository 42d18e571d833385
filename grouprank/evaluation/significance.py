"""Paired significance of a system against a baseline, on ir-measures' per-query values.

Two systems scored on the same queries are compared query by query (paired): for each measure, the
mean difference (system − baseline), its 95 % confidence interval (Student's t on the paired
differences), the paired t-test's p-value (`scipy.stats.ttest_rel`) and the Wilcoxon signed-rank
test's (`scipy.stats.wilcoxon`, which assumes less about the differences' distribution). The pairs
are the queries both were scored on (a reranker scored on the first 16 queries is compared with the
baseline on those 16), and `n` says how many. With fewer than 2 pairs, or no difference at all,
there is no test (p = None; identical systems: p = 1).

Reading: p < 0.05 says a difference this large would be rare if the systems were equally good on
such queries; with few queries a real difference often does not reach it (the CI shows how wide the
uncertainty is). No correction for the several systems and measures compared is applied.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

TEST_NAME = ("paired t-test (scipy.stats.ttest_rel) and Wilcoxon signed-rank (scipy.stats.wilcoxon) on "
             "ir-measures' per-query values; 95% CI of the mean difference (t); pairs = queries both systems "
             "were scored on; no multiple-comparison correction")


def _r(x: float | None, nd: int = 5) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)


def paired(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """System values `a` vs baseline values `b`, same queries in the same order."""
    import numpy as np
    from scipy import stats
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = a - b
    out: dict[str, Any] = {"n": int(len(d)), "mean_diff": _r(d.mean()) if len(d) else None,
                           "ci95": None, "p_ttest": None, "p_wilcoxon": None,
                           "wins": int((d > 0).sum()), "losses": int((d < 0).sum()), "ties": int((d == 0).sum())}
    if len(d) < 2:
        return out
    if np.all(d == 0):
        out.update({"ci95": [0.0, 0.0], "p_ttest": 1.0, "p_wilcoxon": 1.0})
        return out
    t = stats.ttest_rel(a, b)
    if np.all(d == d[0]):  # a constant non-zero difference: no variance, t undefined
        out["ci95"] = [_r(d[0]), _r(d[0])]
    else:
        ci = t.confidence_interval(0.95)
        out["ci95"] = [_r(ci.low), _r(ci.high)]
        out["p_ttest"] = _r(t.pvalue, 6)
    out["p_wilcoxon"] = _r(stats.wilcoxon(a, b, zero_method="wilcox").pvalue, 6) if (d != 0).sum() >= 1 else None
    return out


def compare(per_query: Mapping[str, Mapping[str, Mapping[str, float]]], baseline: str,
            measures: Sequence[str]) -> dict[str, Any]:
    """per_query: system -> measure -> {query_id: value}. Every system but the baseline against the
    baseline on the queries both were scored on: {"baseline", "test", "systems": {system: {measure:
    paired(...)}}}."""
    base = per_query.get(baseline) or {}
    out: dict[str, Any] = {"baseline": baseline, "test": TEST_NAME, "systems": {}}
    for system, vals in per_query.items():
        if system == baseline:
            continue
        res = {}
        for m in measures:
            sv, bv = vals.get(m) or {}, base.get(m) or {}
            qids = sorted(set(sv) & set(bv))
            res[m] = paired([sv[q] for q in qids], [bv[q] for q in qids])
        out["systems"][system] = res
    return out


def per_query_values(frame, measures: Sequence[str]) -> dict[str, dict[str, float]]:
    """ir-measures per-query rows (DataFrame measure, query_id, value: `metrics.evaluate(...,
    per_query=True)`) -> measure -> {query_id: value}."""
    out: dict[str, dict[str, float]] = {m: {} for m in measures}
    for m, q, v in zip(frame["measure"], frame["query_id"], frame["value"]):
        if m in out:
            out[m][str(q)] = float(v)
    return out


def fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_ci(ci: Sequence[float] | None) -> str:
    return "-" if not ci else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def table_text(values: Mapping[str, Mapping[str, float]], queries: Mapping[str, int],
               sig: Mapping[str, Any] | None, measures: Sequence[str]) -> str:
    """systems x measures with each system's query count, and per measure the difference to the
    baseline with its 95% CI and the paired t-test's p (Wilcoxon's in the JSON)."""
    names = list(values)
    w = max([len("system")] + [len(n) for n in names])
    base = (sig or {}).get("baseline")
    head = f"{'system':<{w}}  {'queries':>7}  " + "  ".join(f"{m:>8}" for m in measures)
    if sig:
        head += "  " + "  ".join(f"{'Δ' + m:>10} {'95% CI':>17} {'p':>6}" for m in measures)
    lines = [head]
    for n in names:
        row = f"{n:<{w}}  {queries.get(n, 0):>7}  " + "  ".join(
            f"{values[n][m]:>8.4f}" if isinstance(values[n].get(m), (int, float)) else f"{'-':>8}" for m in measures)
        if sig:
            cmp = (sig.get("systems") or {}).get(n)
            cells = []
            for m in measures:
                if n == base:
                    cells.append(f"{'baseline':>10} {'':>17} {'':>6}")
                elif cmp and cmp.get(m) and cmp[m].get("mean_diff") is not None:
                    c = cmp[m]
                    cells.append(f"{c['mean_diff']:>+10.4f} {fmt_ci(c['ci95']):>17} {fmt_p(c['p_ttest']):>6}")
                else:
                    cells.append(f"{'-':>10} {'':>17} {'':>6}")
            row += "  " + "  ".join(cells)
        lines.append(row.rstrip())
    if sig:
        lines.append(f"(Δ: mean per-query difference to {base} on the queries both were scored on; 95% CI and "
                     "p of the paired t-test; Wilcoxon signed-rank p in the JSON)")
    return "\n".join(lines)
