"""Fusion of judgments into graded labels: the math by hand, the grade rule, failed pairs."""
import json
import math

import numpy as np
import pytest

from data_schemas import JUDGMENTS, LABELS
from grouprank.judges.fusion import (assign_grades, average_ranks, default_thresholds, fuse_labels,
                                     grade_from_anchor, min_ranks, resolve_weights)


def row(q, d, judge, kind, *, score=None, rank=None, status="ok", pass_index=0):
    return {"query_id": q, "doc_id": d, "judge_id": judge, "kind": kind, "model": "m", "template_version": "t",
            "pass_index": pass_index, "group_id": None, "score": score, "rank": rank, "rationale": None,
            "request_hash": "h", "status": status, "error": None if status == "ok" else "boom",
            "injection_flag": False, "prompt_tokens": None, "completion_tokens": None}


def labels_by_doc(table):
    return {r["doc_id"]: r for r in table.to_pylist()}


def test_average_ranks_ties_and_direction():
    assert average_ranks([9, 5, 5, 1]).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert average_ranks([2, 1, 3], higher_is_better=False).tolist() == [2.0, 1.0, 3.0]
    assert min_ranks([0.5, 0.7, 0.5]).tolist() == [2, 1, 2]


def test_paper_rank_fusion_by_hand():
    J = JUDGMENTS.from_records([
        row("q", "a", "pw", "pointwise", score=9), row("q", "b", "pw", "pointwise", score=5),
        row("q", "c", "pw", "pointwise", score=5),
        row("q", "a", "lw", "listwise", rank=2), row("q", "b", "lw", "listwise", rank=1),
        row("q", "c", "lw", "listwise", rank=3),
    ])
    L, rep = fuse_labels(J, beta=0.5)
    LABELS.validate_table(L)
    assert rep.weights == {"lw": 0.5, "pw": 0.5} or rep.weights == {"pw": 0.5, "lw": 0.5}
    by = labels_by_doc(L)
    # S = -0.5 log r_pw - 0.5 log r_lw; pw ranks a=1, b=c=2.5 (tie); lw ranks a=2, b=1, c=3
    assert by["a"]["fused_score"] == pytest.approx(-0.5 * math.log(2))
    assert by["b"]["fused_score"] == pytest.approx(-0.5 * math.log(2.5))
    assert by["c"]["fused_score"] == pytest.approx(-0.5 * math.log(2.5) - 0.5 * math.log(3))
    assert [by[d]["fused_rank"] for d in "abc"] == [1, 2, 3]
    # anchors = pointwise scores 9, 5, 5 -> grades 3, 2, 2 (thresholds 2.5/5/7.5), order from fusion
    assert [by[d]["grade"] for d in "abc"] == [3, 2, 2]
    assert all(by[d]["method"] == "rank_fusion" and by[d]["n_judges"] == 2 for d in "abc")
    assert json.loads(by["a"]["judge_scores"]) == {"pw": 9.0, "lw": 2.0}


def test_beta_weights_the_pointwise_judge():
    J = JUDGMENTS.from_records([
        row("q", "a", "pw", "pointwise", score=9), row("q", "b", "pw", "pointwise", score=1),
        row("q", "a", "lw", "listwise", rank=2), row("q", "b", "lw", "listwise", rank=1),
    ])
    by = labels_by_doc(fuse_labels(J, beta=0.8)[0])
    assert by["a"]["fused_score"] == pytest.approx(-0.2 * math.log(2))
    assert by["b"]["fused_score"] == pytest.approx(-0.8 * math.log(2))
    assert by["a"]["fused_rank"] == 1
    by = labels_by_doc(fuse_labels(J, beta=0.2)[0])
    assert by["b"]["fused_rank"] == 1


def test_resolve_weights():
    assert resolve_weights({"p": "pointwise", "l": "listwise"}, beta=0.3) == {"p": 0.3, "l": pytest.approx(0.7)}
    assert resolve_weights({"p": "local", "l": "listwise"}, beta=0.5) == {"p": 0.5, "l": 0.5}
    three = resolve_weights({"a": "pointwise", "b": "listwise", "c": "groupwise"})
    assert three == {k: pytest.approx(1 / 3) for k in "abc"}
    assert resolve_weights({"a": "pointwise", "b": "listwise"}, {"a": 3, "b": 1}) == {"a": 0.75, "b": 0.25}
    part = resolve_weights({"a": "pointwise", "b": "listwise", "c": "groupwise"}, {"a": 0.5})
    assert part == {"a": 0.5, "b": 0.25, "c": 0.25}
    with pytest.raises(ValueError):
        resolve_weights({"a": "pointwise", "b": "listwise"}, {"a": 1.0})


def test_groupwise_passes_are_averaged_then_ranked():
    J = JUDGMENTS.from_records([
        row("q", "a", "gw", "groupwise", score=8, pass_index=0), row("q", "a", "gw", "groupwise", score=2, pass_index=1),
        row("q", "b", "gw", "groupwise", score=6, pass_index=0), row("q", "b", "gw", "groupwise", score=6, pass_index=1),
        row("q", "c", "gw", "groupwise", score=9, pass_index=0),
        row("q", "c", "gw", "groupwise", status="failed", pass_index=1),
    ])
    by = labels_by_doc(fuse_labels(J)[0])
    # means: a 5, b 6, c 9 (failed pass ignored)
    assert json.loads(by["a"]["judge_scores"]) == {"gw": 5.0}
    assert [by[d]["fused_rank"] for d in "cba"] == [1, 2, 3]
    assert [by[d]["grade"] for d in "abc"] == [2, 2, 3]
    assert by["a"]["method"] == "single"


def test_single_score_judge_reduces_to_thresholds():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 10, size=40).round(2)
    J = JUDGMENTS.from_records([row("q", f"d{i}", "loc", "local", score=float(s)) for i, s in enumerate(scores)])
    by = labels_by_doc(fuse_labels(J)[0])
    thr = default_thresholds(3)
    assert thr == [2.5, 5.0, 7.5]
    for i, s in enumerate(scores):
        assert by[f"d{i}"]["grade"] == grade_from_anchor(s, thr)


def test_grades_follow_fused_order_and_query_level():
    # pw thinks everything is poor in q2; the listwise judge can't lift that level
    recs = []
    for q, base in (("q1", 8.0), ("q2", 1.0)):
        for i in range(5):
            recs.append(row(q, f"{q}d{i}", "pw", "pointwise", score=base + 0.1 * i))
            recs.append(row(q, f"{q}d{i}", "lw", "listwise", rank=i + 1))
    L = fuse_labels(JUDGMENTS.from_records(recs))[0]
    rows = L.to_pylist()
    assert all(r["grade"] == 3 for r in rows if r["query_id"] == "q1")
    assert all(r["grade"] == 0 for r in rows if r["query_id"] == "q2")
    # monotone: a better fused rank never has a lower grade
    for q in ("q1", "q2"):
        rs = sorted((r for r in rows if r["query_id"] == q), key=lambda r: r["fused_rank"])
        assert all(a["grade"] >= b["grade"] for a, b in zip(rs, rs[1:]))


def test_assign_grades_counts_and_ties():
    g = assign_grades([0.9, 0.8, 0.7, 0.6, 0.5], [4, 2, 1])
    assert g.tolist() == [3, 2, 1, 1, 0]
    # tie at a boundary: both get the grade of the first
    g = assign_grades([0.9, 0.8, 0.8, 0.1], [3, 2, 1])
    assert g.tolist() == [3, 2, 2, 0]  # position 2 would get 1; tied with position 1 it gets 2
    # non-increasing counts enforced
    assert assign_grades([3, 2, 1], [1, 2, 3]).tolist() == [3, 0, 0]


def test_failed_pairs_imputation_and_unlabelled():
    J = JUDGMENTS.from_records([
        row("q", "a", "pw", "pointwise", score=9), row("q", "b", "pw", "pointwise", score=4),
        row("q", "c", "pw", "pointwise", status="failed"), row("q", "d", "pw", "pointwise", status="failed"),
        row("q", "a", "lw", "listwise", rank=1), row("q", "b", "lw", "listwise", rank=3),
        row("q", "c", "lw", "listwise", rank=2), row("q", "d", "lw", "listwise", status="failed"),
    ])
    L, rep = fuse_labels(J)
    by = labels_by_doc(L)
    assert "d" not in by and rep.unlabelled == [("q", "d")]
    assert by["c"]["n_judges"] == 1 and json.loads(by["c"]["judge_scores"])["pw"] is None
    # pw ranked a=1, b=2 -> c gets the mean pw term (0 - log 2)/2; lw ranks over a,b,c = 1, 3, 2
    assert by["c"]["fused_score"] == pytest.approx(0.5 * (-math.log(2) / 2) + 0.5 * (-math.log(2)))
    assert by["b"]["fused_score"] == pytest.approx(0.5 * -math.log(2) + 0.5 * -math.log(3))
    assert rep.partially_judged == 1 and rep.labelled == 3


def test_score_mean_and_listwise_pseudo_scores():
    J = JUDGMENTS.from_records([
        row("q", "a", "pw", "pointwise", score=8), row("q", "b", "pw", "pointwise", score=2),
        row("q", "c", "pw", "pointwise", status="failed"),
        row("q", "a", "lw", "listwise", rank=1), row("q", "b", "lw", "listwise", rank=3),
        row("q", "c", "lw", "listwise", rank=2),
    ])
    by = labels_by_doc(fuse_labels(J, method="score_mean")[0])
    # lw pseudo-scores 10*(n-r)/(n-1): a 10, b 0, c 5; c has only lw -> renormalised
    assert by["a"]["fused_score"] == pytest.approx(9.0)
    assert by["b"]["fused_score"] == pytest.approx(1.0)
    assert by["c"]["fused_score"] == pytest.approx(5.0)
    assert by["a"]["method"] == "score_mean"


def test_rank_only_fallback_and_config_checks():
    J = JUDGMENTS.from_records([row("q", f"d{i}", "lw", "listwise", rank=i + 1) for i in range(10)])
    L, rep = fuse_labels(J)
    g = {r["doc_id"]: r["grade"] for r in L.to_pylist()}
    assert rep.rank_only_queries == 1
    # defaults: >=1: 40 %, >=2: 20 %, >=3: 10 % of the pool
    assert [g[f"d{i}"] for i in range(10)] == [3, 2, 1, 1, 0, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError):
        fuse_labels(J, thresholds=[5, 2.5, 7.5])
    with pytest.raises(ValueError):
        fuse_labels(J, method="borda")
    # another scale: G = 1 (binary) with one threshold
    J2 = JUDGMENTS.from_records([row("q", "a", "p", "pointwise", score=6), row("q", "b", "p", "pointwise", score=4)])
    g2 = {r["doc_id"]: r["grade"] for r in fuse_labels(J2, grade_scale=1)[0].to_pylist()}
    assert g2 == {"a": 1, "b": 0}
