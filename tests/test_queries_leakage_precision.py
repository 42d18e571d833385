"""leakage_precision: of the queries the leakage guard removed, how many are real leaks by the
human labels (shared evidence document, or a near-identical text of the matched evaluation query)."""
import pandas as pd

from grouprank.queries.leakage import leakage_precision


def test_counts_real_leaks_and_neighbours():
    queries = pd.DataFrame({
        "query_id": ["t1", "t2", "t3", "t4", "t5"],
        "text": ["aspirin lowers stroke risk in adults", "statins reduce mortality",
                 "vitamin d prevents fractures in the elderly", "coffee improves memory in mice",
                 "exercise lowers blood pressure"],
        "split": ["train"] * 5,
        "decision": ["leakage", "leakage", "leakage", "kept", "leakage"],
        "decision_detail": ["eval=e1 set=s/test via=embedding cos=0.95", "eval=e2 set=s/test via=embedding cos=0.91",
                            "eval=e3 set=s/test via=lexical lex=0.90(edit)", None,
                            "eval=e4 set=s/test via=embedding cos=0.92"]})
    evals = pd.DataFrame({"query_id": ["e1", "e2", "e3", "e4"],
                          "text": ["aspirin lowers the stroke risk in adults", "statins do not change mortality",
                                   "vitamin d prevents fracture in the elderly", "running lowers blood pressure"]})
    qrels = pd.DataFrame({"query_id": ["t1", "e1", "t2", "e2", "e9", "t5", "e4"],
                          "doc_id": ["d1", "d1", "d2", "d3", "d2", "d5", "d6"], "grade": [1] * 7,
                          "split": ["train", "test", "train", "test", "test", "train", "test"]})
    r = leakage_precision(queries, qrels, eval_queries=evals)
    assert r["removed"] == 4 and r["removed_without_qrels"] == 1  # t3 has no qrels
    assert r["sharing_evidence_with_matched"] == 1                 # t1 ~ e1 via d1
    assert r["sharing_evidence_with_any_eval"] == 2                # + t2 shares d2 with e9
    assert r["near_identical_to_matched"] >= 1                     # t3 ~ e3 (and t1 ~ e1)
    assert r["real_leaks"] == 3 and abs(r["precision"] - 0.75) < 1e-9   # t5 is only a neighbour
    assert r["by_via"]["embedding"] == {"removed": 3, "real": 2}
    assert r["by_via"]["lexical"] == {"removed": 1, "real": 1}
