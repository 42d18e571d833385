"""The evaluation artifact's rows (systems x measures from eval_report.json) and the untruncated
stage-numbers rows."""
import json

from flows import artifacts


def test_evaluation_rows_from_eval_report(tmp_path):
    rep = {"split": "test", "queries": 25, "measures": ["nDCG@10", "R@100", "RR@10"],
           "systems": {"bm25": {"nDCG@10": 0.31234, "R@100": 0.7, "RR@10": 0.4},
                       "hybrid-minmax": {"nDCG@10": 0.35, "R@100": 0.8, "RR@10": 0.45},
                       "hybrid-minmax+trained-groupwise-rerank": {"nDCG@10": 0.37, "R@100": 0.8, "RR@10": 0.5}}}
    p = tmp_path / "eval_report.json"
    p.write_text(json.dumps(rep))
    rows = artifacts.evaluation_rows(str(p))
    assert [r["system"] for r in rows] == list(rep["systems"])
    assert rows[0] == {"system": "bm25", "nDCG@10": 0.3123, "R@100": 0.7, "RR@10": 0.4, "split": "test",
                       "queries": 25}
    assert [set(r) for r in rows] == [set(rows[0])] * 3
    assert artifacts.evaluation_rows(str(tmp_path / "missing.json")) == []


def test_stage_number_rows_keep_every_number():
    stats = {f"k{i}": i for i in range(20)} | {"name": "x", "flag": True}
    rows = artifacts.stage_number_rows([{"stage": "retrieve", "stats": stats}])
    assert len(rows) == 22 and rows[-2] == {"stage": "retrieve", "number": "name", "value": "x"}
    assert rows[-1]["value"] == "True" and rows[3] == {"stage": "retrieve", "number": "k3", "value": "3"}
    assert artifacts.stage_rows([{"stage": "retrieve", "state": "ran", "seconds": 1, "stats": stats}])[0][
        "numbers"].count("=") == 8  # the compact cell stays short; stage-numbers holds the rest


def test_evaluation_rows_show_each_systems_queries_and_significance(tmp_path):
    """A reranker scored on 2 of 5 queries is shown with 2, not the 5 of the first stage; beside each
    measure the paired difference to the baseline, its CI and p-values (eval_report's significance)."""
    from grouprank.evaluation.significance import compare
    pq_vals = {"hybrid": {"nDCG@10": {f"q{i}": 0.1 * i for i in range(5)}},
               "hybrid+rerank": {"nDCG@10": {"q0": 0.3, "q1": 0.2}}}
    rep = {"split": "test", "queries": 5, "measures": ["nDCG@10"],
           "systems": {"hybrid": {"nDCG@10": 0.2}, "hybrid+rerank": {"nDCG@10": 0.25}},
           "system_queries": {"hybrid": 5, "hybrid+rerank": 2},
           "significance": compare(pq_vals, "hybrid", ["nDCG@10"])}
    p = tmp_path / "eval_report.json"
    p.write_text(json.dumps(rep))
    rows = {r["system"]: r for r in artifacts.evaluation_rows(str(p))}
    assert rows["hybrid"]["queries"] == 5 and rows["hybrid+rerank"]["queries"] == 2
    assert rows["hybrid"]["baseline"] == "(baseline)" and rows["hybrid"]["nDCG@10 Δ"] is None
    r = rows["hybrid+rerank"]
    assert r["baseline"] == "hybrid" and r["nDCG@10 pairs"] == 2 and r["nDCG@10 Δ"] == 0.2
    lo, hi = rep["significance"]["systems"]["hybrid+rerank"]["nDCG@10"]["ci95"]
    assert lo < 0.2 < hi and r["nDCG@10 95% CI"] == f"[{lo:+.4f}, {hi:+.4f}]"  # 2 pairs: wide
    assert r["nDCG@10 p (t-test)"] > 0.05  # +0.3 and +0.1 on two queries prove nothing
    assert set(rows["hybrid"]) == set(r)


def test_agreement_rows_say_what_the_pool_is_made_of_and_why_a_cell_is_blank(tmp_path):
    import pyarrow as pa

    from data_schemas import JUDGMENTS, LABELS, QRELS
    labels = [{"query_id": "q1", "doc_id": f"d{i}", "grade": g, "fused_score": float(g), "fused_rank": i + 1,
               "method": "single", "judge_scores": "{}", "n_judges": 1} for i, g in enumerate([3, 2, 0, 0, 1])]
    qrels = [{"query_id": "q1", "doc_id": d, "grade": 1, "original_label": "1", "split": "train", "source": "human"}
             for d in ("d0", "d1")]
    base = {"kind": "pointwise", "model": "m", "template_version": "t", "pass_index": 0, "group_id": None,
            "rank": None, "rationale": None, "request_hash": "h", "status": "ok", "error": None,
            "injection_flag": False, "prompt_tokens": None, "completion_tokens": None}
    # judge b judged 2 documents only: no query with 3 shared documents, so no Spearman
    j = [{**base, "query_id": "q1", "doc_id": f"d{i}", "judge_id": "a", "score": float(i)} for i in range(5)]
    j += [{**base, "query_id": "q1", "doc_id": f"d{i}", "judge_id": "b", "score": float(i)} for i in range(2)]
    lp = LABELS.write(LABELS.from_records(labels), tmp_path / "l.parquet")
    qp = QRELS.write(QRELS.from_records(qrels), tmp_path / "q.parquet")
    jp = JUDGMENTS.write(JUDGMENTS.from_records(j), tmp_path / "j.parquet")
    rows = {(r["a"], r["b"]): r for r in artifacts.agreement_rows(str(jp), str(lp), str(qp))}
    jj = rows[("a", "b")]
    assert jj["spearman"] is None and jj["note"].startswith("blank: no query where both judges judged >= 3")
    h = rows[("human qrels", "fused labels")]
    assert h["pairs_or_queries"] == 5 and h["unlisted_as_grade_0"] == 3
    assert "3 of the 5 are pooled documents the qrels do not list, counted as human grade 0" in h["note"]
    assert "2 carry a human label" in h["note"]
    assert len({frozenset(r) for r in rows.values()}) == 1  # same columns in every row
    del pa


def test_console_summary_of_the_evaluation(tmp_path):
    """What `python -m flows synthesize` prints at the end: each system's queries and its difference to
    the first stage with CI and p (the same report the artifact reads)."""
    from flows.__main__ import evaluation_text
    from grouprank.evaluation.significance import compare
    pq_vals = {"hybrid-minmax": {"nDCG@10": {f"q{i}": 0.1 * (i % 3) for i in range(8)}},
               "hybrid-minmax+trained-groupwise-rerank": {"nDCG@10": {f"q{i}": 0.1 * (i % 3) + 0.05 for i in range(3)}}}
    rep = {"collection": "scifact", "split": "test", "queries": 8, "measures": ["nDCG@10"],
           "systems": {"hybrid-minmax": {"nDCG@10": 0.1}, "hybrid-minmax+trained-groupwise-rerank": {"nDCG@10": 0.15}},
           "system_queries": {"hybrid-minmax": 8, "hybrid-minmax+trained-groupwise-rerank": 3},
           "significance": compare(pq_vals, "hybrid-minmax", ["nDCG@10"])}
    p = tmp_path / "eval_report.json"
    p.write_text(json.dumps(rep))
    text = evaluation_text(str(p))
    lines = text.splitlines()
    assert lines[0] == "(scifact, split test)"
    assert lines[1].split()[:3] == ["system", "queries", "nDCG@10"]
    rr = next(ln for ln in lines if ln.startswith("hybrid-minmax+trained"))
    assert rr.split()[1] == "3" and "+0.0500" in rr  # 3 queries, +0.05 on each
    assert next(ln for ln in lines if ln.startswith("hybrid-minmax ")).split()[1] == "8"
