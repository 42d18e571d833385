import math

import pandas as pd
import pytest

from grouprank.evaluation.agreement import agreement, weighted_kappa
from grouprank.evaluation.metrics import evaluate
from grouprank.text import document_text_map


def test_ndcg_hand_computed():
    # ranking: d1 (grade 0), d2 (grade 2), d3 (grade 1); linear gain, log2 discount
    run = pd.DataFrame({"query_id": ["q"] * 3, "doc_id": ["d1", "d2", "d3"], "score": [3.0, 2.0, 1.0]})
    qrels = pd.DataFrame({"query_id": ["q"] * 3, "doc_id": ["d1", "d2", "d3"], "grade": [0, 2, 1]})
    dcg = 0 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert evaluate(run, qrels, ["nDCG@10"])["nDCG@10"] == pytest.approx(dcg / idcg, abs=1e-4)


def test_missing_query_counts_zero():
    run = pd.DataFrame({"query_id": ["a"], "doc_id": ["d"], "score": [1.0]})
    qrels = pd.DataFrame({"query_id": ["a", "b"], "doc_id": ["d", "d"], "grade": [1, 1]})
    assert evaluate(run, qrels, ["nDCG@10"])["nDCG@10"] == pytest.approx(0.5)


def test_matches_ir_measures_on_real_run(load):
    """A real run on DL19 (first 200 judged docs per query ordered by doc length) scored by our
    wrapper and directly by ir_measures."""
    import ir_measures
    c = load("trec_dl19_passage")
    q = c.qrels.to_pandas()
    lens = {d: len(t) for d, t in document_text_map(c.documents).items()}
    q["score"] = q["doc_id"].map(lens).astype(float)
    run = q[["query_id", "doc_id", "score"]]
    ours = evaluate(run, q, ["nDCG@10", "R@100", "AP"], rel=2)
    direct = ir_measures.calc_aggregate(
        [ir_measures.nDCG @ 10, ir_measures.R(rel=2) @ 100, ir_measures.AP(rel=2)],
        q.rename(columns={"grade": "relevance"})[["query_id", "doc_id", "relevance"]], run)
    assert ours["nDCG@10"] == pytest.approx(direct[ir_measures.nDCG @ 10], abs=1e-9)
    assert ours["R@100"] == pytest.approx(direct[ir_measures.R(rel=2) @ 100], abs=1e-9)
    assert ours["AP"] == pytest.approx(direct[ir_measures.AP(rel=2)], abs=1e-9)


def test_weighted_kappa():
    assert weighted_kappa([0, 1, 2, 3], [0, 1, 2, 3]) == pytest.approx(1.0)
    # hand value: a=[0,0,1,1], b=[0,1,1,1]; 2 labels -> linear weights = unweighted kappa
    # po = 3/4, pe = (2/4*1/4 + 2/4*3/4) = 0.5 -> kappa = 0.5
    assert weighted_kappa([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx(0.5)
    a = agreement([0, 1, 2, 3, 3], [0, 1, 1, 3, 2])
    assert a["confusion"]["matrix"][3] == [0, 0, 1, 1]
    assert 0 < a["kappa_weighted"] < 1 and a["spearman"] > 0.8
