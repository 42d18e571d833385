"""Dedup: exact (normalised) and near-duplicate (embedding cosine >= 0.95) with representatives."""
import numpy as np

from grouprank.config import RunConfig
from grouprank.queries.dedup import exact_groups, near_groups
from grouprank.queries.embed import default_embedder
from grouprank.queries.mine import apply_filters


def _rec(qid, text, source="generated"):
    return {"query_id": qid, "text": text, "collection": "c", "split": "generated" if source == "generated" else "train",
            "source": source, "source_doc_id": "d1" if source == "generated" else None,
            "generator_model": None, "template_version": None, "query_type": None, "roundtrip_rank": None,
            "decision": "kept", "decision_detail": None}


# (representative, planted near-duplicate): cosines 0.99 / 0.99 / 0.99 / 0.99 under all-MiniLM-L6-v2
NEAR = [("effects of vitamin d on multiple sclerosis relapse", "vitamin D effects on multiple sclerosis relapses"),
        ("What is the role of vitamin D in multiple sclerosis?", "What role does vitamin D play in multiple sclerosis?"),
        ("How does aspirin affect heart attack risk?", "How does aspirin affect the risk of heart attacks?"),
        ("statins and muscle pain", "Statins and muscle pain!")]  # the last one is an exact (normalised) duplicate
# distinct queries, some on the same topics (cosine 0.5-0.8 to the ones above): must all be kept
DISTINCT = ["vitamin d rickets children", "How does aspirin affect stroke risk?", "statins and liver damage",
            "multiple sclerosis relapse rate after pregnancy", "aspirin dosage for children"]


def test_planted_near_duplicates_merge_and_distinct_queries_stay(tmp_path):
    recs = [_rec(f"r{i}", a) for i, (a, _) in enumerate(NEAR)]
    recs += [_rec(f"x{i}", t) for i, t in enumerate(DISTINCT)]
    recs += [_rec(f"p{i}", b) for i, (_, b) in enumerate(NEAR)]
    cfg = RunConfig.model_validate({"work_dir": str(tmp_path)})
    report = apply_filters(recs, [], embed=default_embedder(), rank_fn=None, cfg=cfg)
    by = {r["query_id"]: r for r in recs}
    for i in range(len(NEAR)):
        assert by[f"r{i}"]["decision"] == "kept"
        p = by[f"p{i}"]
        assert p["decision_detail"].startswith(f"of=r{i}")
        if i == 3:
            assert p["decision"] == "duplicate" and p["decision_detail"] == "of=r3"
        else:
            assert p["decision"] == "near_duplicate"
            assert float(p["decision_detail"].split("cos=")[1]) >= 0.95
    assert all(by[f"x{i}"]["decision"] == "kept" for i in range(len(DISTINCT)))
    assert report["dedup"] == {"duplicate": 1, "near_duplicate": 3, "threshold": 0.95,
                               "existing_among_themselves": "exact"}


def test_existing_minimal_pairs_kept_unless_asked(tmp_path):
    a, b = "Aspirin reduces the risk of heart attack.", "Aspirin increases the risk of heart attack."  # cos 0.97
    gen = "aspirin reduces the risk of heart attack"  # an exact (normalised) copy, generated
    for mode, expect in (("exact", ["kept", "kept", "duplicate"]), ("near", ["kept", "near_duplicate", "duplicate"])):
        recs = [_rec("e1", a, "existing"), _rec("e2", b, "existing"), _rec("g1", gen)]
        cfg = RunConfig.model_validate({"work_dir": str(tmp_path), "queries": {"dedup_existing": mode}})
        apply_filters(recs, [], embed=default_embedder(), rank_fn=None, cfg=cfg)
        assert [r["decision"] for r in recs] == expect, mode
    # a generated near copy of an existing query is merged into the existing one
    recs = [_rec("e1", a, "existing"), _rec("g2", "Does aspirin reduce the risk of a heart attack?")]
    cfg = RunConfig.model_validate({"work_dir": str(tmp_path), "queries": {"dedup_threshold": 0.9}})
    apply_filters(recs, [], embed=default_embedder(), rank_fn=None, cfg=cfg)
    assert recs[1]["decision"] == "near_duplicate" and recs[1]["decision_detail"].startswith("of=e1 cos=")


def test_near_groups_star_not_chain_and_best_representative():
    # a~b (0.96), b~c (0.96), a!~c (0.85): b merges into a; c is compared with representatives only
    def unit(deg):
        r = np.deg2rad(deg)
        return np.array([np.cos(r), np.sin(r)], dtype=np.float32)
    emb = np.stack([unit(0), unit(16), unit(32), unit(31)])  # d ~ c (0.9998), d ~ b (0.966)
    out = near_groups(emb, 0.95)
    assert out[0] is None and out[1][0] == 0 and out[2] is None
    assert out[3][0] == 2 and out[3][1] > 0.99  # the most similar representative, not the first
    assert near_groups(emb, 0.95, eligible=lambda i, j: False) == [None] * 4
    assert exact_groups(["A b.", "a B", "c", "a  b!"]) == [None, 0, None, 0]
