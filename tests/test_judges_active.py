"""Active labelling (judges/active.py) and fusion weights from agreement with human labels
(judges/fusion.agreement_weights): the selection, the HTTP path through the local server (only the
selected pairs reach it), and the weights that keep a weak judge from pulling the labels down."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_schemas import JUDGMENTS
from grouprank.config import JudgeSpec
from grouprank.judges.active import SKIPPED, select, uncertainties
from grouprank.judges.base import JudgePool, check_complete
from grouprank.judges.fusion import agreement_weights, fuse_labels
from grouprank.judges.runner import dry_run, run_judges
from tests.test_judges_http import make_cfg, server, small_pool  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(300)
TH = [2.5, 5.0, 7.5]


def _pool():
    docs = {f"d{i}": f"text {i}" for i in range(6)}
    return JudgePool({"q": "query"}, docs, {"q": [f"d{i}" for i in range(6)]})


def test_uncertainty_prefers_boundaries_and_disagreement():
    pool = _pool()
    # first-stage order d0..d5; the cheap judge agrees on the order except for d5, which it puts
    # first; d2 sits on the 5.0 threshold
    cheap = {("q", "d0"): 9.6, ("q", "d1"): 8.9, ("q", "d2"): 5.0, ("q", "d3"): 1.0, ("q", "d4"): 0.2,
             ("q", "d5"): 9.9}
    u = uncertainties(pool, cheap, TH)
    assert u[("q", "d2")] > u[("q", "d1")] and u[("q", "d2")] > u[("q", "d4")]   # on a boundary
    # last in the first stage, first for the cheap judge: above every pair off a boundary
    assert u[("q", "d5")] > max(u[("q", d)] for d in ("d0", "d1", "d3", "d4"))
    assert u[("q", "d4")] == min(u.values())                                       # clear and agreed
    sel = select(pool, cheap, TH, budget_pairs=2)
    assert sel.pool.pools == {"q": ["d2", "d5"]}        # pool order kept inside the selection
    assert sorted(sel.skipped) == [("q", d) for d in ("d0", "d1", "d3", "d4")]
    assert sel.report["selected"] == 2 and sel.report["calls_saved_fraction"] == round(4 / 6, 4)
    # the budgets combine (the smallest wins); pairs the cheap judge could not score come first
    assert select(pool, cheap, TH, budget_pairs=5, budget_fraction=0.5).report["selected"] == 3
    del cheap[("q", "d0")]
    assert select(pool, cheap, TH, budget_pairs=1).pool.pools == {"q": ["d0"]}
    tok = select(pool, cheap, TH, budget_prompt_tokens=2 * 160)   # ~153 tokens per pair here
    assert tok.report["selected"] == 2


def test_active_pointwise_judge_sends_only_the_selected_pairs(tmp_path, server, small_pool):  # noqa: F811
    pool, _ = small_pool
    specs = [JudgeSpec(id="loc", kind="local"),
             JudgeSpec(id="pw", kind="pointwise", select="uncertain", budget_pairs=7)]
    # a long timeout: on a loaded machine the responder's first answers (models loading) can pass 30 s,
    # and a timed-out request is sent again (counted twice by the server)
    cfg = make_cfg(tmp_path, server.base_url, specs=specs, timeout_s=600.0)
    assert dry_run(cfg, pool)["judges"]["pw"]["calls"] == 7     # scaled to the budget before any call
    server.reset()
    rows, usage = run_judges(cfg, pool)
    assert server.stats(detail=False)["requests"] == 7
    JUDGMENTS.validate_table(JUDGMENTS.from_records(rows))
    pw = [r for r in rows if r["judge_id"] == "pw"]
    check_complete(rows, pool, "pw")
    ok = [r for r in pw if r["status"] == "ok"]
    skipped = [r for r in pw if r["status"] == SKIPPED]
    assert len(ok) == 7 and len(skipped) == pool.n_pairs - 7
    assert all(r["error"].startswith("active labelling: not selected") for r in skipped)
    assert usage["pw"]["active"]["selected"] == 7 and usage["pw"]["pairs_skipped"] == len(skipped)
    assert usage["pw"]["pairs_ok"] == 7 and usage["pw"]["pairs_failed"] == 0
    # the selected ones are the most uncertain under the local judge's scores
    cheap = {(r["query_id"], r["doc_id"]): r["score"] for r in rows if r["judge_id"] == "loc"}
    u = uncertainties(pool, cheap, TH)
    chosen = {(r["query_id"], r["doc_id"]) for r in ok}
    assert min(u[p] for p in chosen) >= max(u[(r["query_id"], r["doc_id"])] for r in skipped)
    # skipped pairs are missing for the LLM judge in the fusion, not zeros: every pair labelled
    L = fuse_labels(JUDGMENTS.from_records(rows))[0]
    assert L.num_rows == pool.n_pairs


def _judgments(values: dict[str, dict[tuple[str, str], float]], kind="pointwise"):
    rows = []
    for jid, vals in values.items():
        for (q, d), v in vals.items():
            rows.append({"query_id": q, "doc_id": d, "judge_id": jid, "kind": kind, "model": "m",
                         "template_version": "t", "pass_index": 0, "group_id": None, "score": v, "rank": None,
                         "rationale": None, "request_hash": "h" * 64, "status": "ok", "error": None,
                         "injection_flag": False, "prompt_tokens": None, "completion_tokens": None})
    return pd.DataFrame(rows)


def test_agreement_weights_silence_a_judge_that_disagrees_with_humans():
    rng = np.random.default_rng(0)
    qrels, good, bad = [], {}, {}
    for qi in range(10):
        q = f"q{qi}"
        for di in range(8):
            g = 2 if di < 2 else (1 if di < 4 else 0)
            if g:
                qrels.append({"query_id": q, "doc_id": f"d{di}", "grade": g})
            good[(q, f"d{di}")] = 3 * g + rng.uniform(0, 2)      # follows the human grade
            bad[(q, f"d{di}")] = 10 - 3 * g - rng.uniform(0, 2)  # reverses it
    J = _judgments({"good": good, "bad": bad})
    w, rep = agreement_weights(J, pd.DataFrame(qrels), min_pairs=30)
    assert rep["calibration_queries"] == 10
    assert rep["judges"]["good"]["spearman"] > 0.8 and rep["judges"]["bad"]["spearman"] < -0.8
    assert w["good"] > 0.99 and w["bad"] < 0.01
    # with these weights the labels follow the good judge; with equal weights they would not
    L = fuse_labels(J, weights=w)[0].to_pandas()
    human = {(r["query_id"], r["doc_id"]): r["grade"] for r in qrels}
    L["human"] = [human.get((a, b), 0) for a, b in zip(L.query_id, L.doc_id)]
    assert L[L.human == 2].grade.mean() > L[L.human == 0].grade.mean() + 1
    Le = fuse_labels(J)[0].to_pandas()
    Le["human"] = L["human"].values
    assert Le[Le.human == 2].grade.mean() <= Le[Le.human == 0].grade.mean() + 0.5
    # a judge with too few calibration pairs (here: 5) never outweighs a measured one
    few = {k: v for k, v in list(bad.items())[:5]}
    w2, rep2 = agreement_weights(_judgments({"good": good, "few": few}), pd.DataFrame(qrels), min_pairs=30)
    assert "spearman" not in rep2["judges"]["few"] and w2["few"] < 0.01 < w2["good"]
    # too few calibration pairs: the configured rule applies
    assert agreement_weights(J, pd.DataFrame(qrels), min_pairs=1000)[0] is None
