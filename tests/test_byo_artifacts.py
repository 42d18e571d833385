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
