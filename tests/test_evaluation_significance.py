"""Paired significance of every comparison (grouprank.evaluation.significance): the numbers against
hand computation, pairs = the queries both systems were scored on, and on the fixture collection
(TREC DL19, NIST qrels) through `score_runs` and `grouprank evaluate --run`: query counts, the
difference to the baseline with its CI and p in the console and the JSON, and a warning for a run
that shares no query with the qrels."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from grouprank.evaluation.significance import compare, paired


def test_paired_against_hand_computation():
    a = [0.5, 0.7, 0.9, 0.4, 0.8]
    b = [0.4, 0.5, 0.9, 0.3, 0.6]  # differences 0.1 0.2 0 0.1 0.2
    r = paired(a, b)
    sd = math.sqrt(0.028 / 4)
    se = sd / math.sqrt(5)
    assert r["n"] == 5 and r["mean_diff"] == pytest.approx(0.12)
    assert (r["wins"], r["losses"], r["ties"]) == (4, 0, 1)
    t975 = 2.776445105  # Student t, 4 degrees of freedom
    assert r["ci95"] == pytest.approx([0.12 - t975 * se, 0.12 + t975 * se], abs=1e-5)
    assert r["p_ttest"] == pytest.approx(0.0327, abs=5e-4)  # t = 3.207, df 4
    assert r["p_wilcoxon"] == pytest.approx(0.125)  # 4 non-zero differences, all positive: 2 / 2^4
    same = paired(a, a)
    assert same["p_ttest"] == 1.0 == same["p_wilcoxon"] and same["ci95"] == [0.0, 0.0]
    assert paired([0.3], [0.1])["p_ttest"] is None  # one pair: no test


def test_compare_pairs_on_the_queries_both_were_scored_on():
    base = {"nDCG@10": {f"q{i}": 0.5 for i in range(10)}}
    rer = {"nDCG@10": {f"q{i}": 0.6 + 0.01 * i for i in range(4)}}  # a reranker scored on 4 queries
    out = compare({"first": base, "rerank": rer}, "first", ["nDCG@10"])
    c = out["systems"]["rerank"]["nDCG@10"]
    assert out["baseline"] == "first" and "first" not in out["systems"]
    assert c["n"] == 4 and c["mean_diff"] == pytest.approx(0.115)


@pytest.fixture(scope="module")
def dl19_runs(load):
    c = load("trec_dl19_passage")
    q = c.qrels.to_pandas()
    lens = {d: len(t) for d, t in zip(c.documents["doc_id"].to_pylist(), c.documents["text"].to_pylist())}
    by_len = q.assign(score=q["doc_id"].map(lens).astype(float))[["query_id", "doc_id", "score"]]
    oracle = q.assign(score=q["grade"].astype(float) + 1e-6 * q["doc_id"].map(lens))[["query_id", "doc_id", "score"]]
    return q[["query_id", "doc_id", "grade"]], by_len, oracle


def test_score_runs_on_the_fixture_collection(dl19_runs):
    from grouprank.evaluation.runs import score_runs, table_text
    qrels, by_len, oracle = dl19_runs
    judged = qrels["query_id"].nunique()
    few = sorted(qrels["query_id"].unique())[:10]
    summary, _ = score_runs({"length": by_len, "oracle": oracle, "oracle10": oracle[oracle.query_id.isin(few)],
                             "length-again": by_len}, qrels, measures=["nDCG@10", "RR@10"], rel=2)
    sig = summary["significance"]
    assert sig["baseline"] == "length"
    o = sig["systems"]["oracle"]["nDCG@10"]
    assert o["n"] == judged == 43 and o["mean_diff"] > 0.2 and o["p_ttest"] < 0.001 and o["p_wilcoxon"] < 0.001
    assert o["ci95"][0] > 0 and o["mean_diff"] == pytest.approx(
        summary["systems"]["oracle"]["nDCG@10"] - summary["systems"]["length"]["nDCG@10"], abs=1e-4)
    # a run with 10 queries: the other 33 count 0 in its mean (trec_eval -c), but it is compared on all 43
    assert sig["systems"]["oracle10"]["nDCG@10"]["n"] == 43
    assert sig["systems"]["length-again"]["nDCG@10"]["p_ttest"] == 1.0
    text = table_text(summary)
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["system", "queries", "nDCG@10", "RR@10"]
    row = next(ln for ln in lines if ln.startswith("oracle "))
    assert row.split()[1] == "43" and "<0.001" in row and f"{o['mean_diff']:+.4f}" in row
    assert next(ln for ln in lines if ln.startswith("oracle10")).split()[1] == "10"
    assert "baseline" in next(ln for ln in lines if ln.startswith("length "))
    # another baseline by name; an unknown one is refused
    s2, _ = score_runs({"length": by_len, "oracle": oracle}, qrels, measures=["nDCG@10"], baseline="oracle")
    assert s2["significance"]["systems"]["length"]["nDCG@10"]["mean_diff"] < 0
    from grouprank.errors import UserError
    with pytest.raises(UserError, match="--baseline 'nope'"):
        score_runs({"length": by_len, "oracle": oracle}, qrels, measures=["nDCG@10"], baseline="nope")


def test_evaluate_run_command_prints_counts_significance_and_no_overlap_warning(dl19_runs, tmp_path, capsys, caplog):
    from grouprank.cli import main
    qrels, by_len, oracle = dl19_runs
    paths = {}
    for name, run in (("length", by_len), ("oracle", oracle)):
        r = run.sort_values(["query_id", "score"], ascending=[True, False])
        r = r.assign(rank=r.groupby("query_id").cumcount() + 1)
        paths[name] = tmp_path / f"{name}.trec"
        paths[name].write_text("".join(f"{q} Q0 {d} {k} {s} {name}\n" for q, d, k, s in
                                       zip(r.query_id, r.doc_id, r["rank"], r.score)))
    stranger = tmp_path / "stranger.trec"
    stranger.write_text("nosuchquery Q0 d1 1 1.0 x\n")
    out_dir = tmp_path / "ev"
    assert main(["evaluate", "--collection", "trec_dl19_passage", "--rel", "2", "--measure", "nDCG@10",
                 "--run", f"length={paths['length']}", "--run", f"oracle={paths['oracle']}",
                 "--run", f"stranger={stranger}", "--out-dir", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "Δ" in out and "95% CI" in out and "<0.001" in out
    assert "WARNING: run stranger shares no query with the qrels" in out
    assert any("shares no query with the qrels" in r.getMessage() for r in caplog.records)
    s = json.loads((out_dir / "summary.json").read_text())
    assert s["significance"]["baseline"] == "length" and s["no_overlap"] == ["stranger"]
    assert s["significance"]["systems"]["oracle"]["nDCG@10"]["p_wilcoxon"] < 0.001
    assert s["systems"]["stranger"]["queries_in_run"] == 0
