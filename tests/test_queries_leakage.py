"""Leakage guard on SciFact: train claims (+ planted copies of test claims) against the 300 test
claims as the evaluation set.

Policy under test (see grouprank/queries/leakage.py): exact, embedding (cos >= 0.90) and lexical
(edit/Jaccard >= 0.85) near copies are leakage, negations included: "X lack inductive properties"
vs "X show inductive properties" need the same evidence documents.

Honesty check on the real claims: the guard's rule is embeddings + string similarity; the check
uses an independent signal, SciFact's qrels. Every real train claim the guard flags must either
cite an evidence document of the test claim it is said to copy, or be a visible string-level
near copy of it (lexical similarity >= 0.75). Train claims that merely share an evidence document
with some test claim (different claims about the same paper) must mostly stay kept.
"""
import random

import numpy as np
import pytest

from grouprank.config import RunConfig
from grouprank.queries.embed import default_embedder
from grouprank.queries.leakage import EvalQuery, find_leaks
from grouprank.queries.mine import mine_queries
from grouprank.queries.textsim import lexical_similarity


def _typo(s: str, rng: random.Random, n: int = 2) -> str:
    chars = list(s)
    for _ in range(n):
        i = rng.randrange(1, len(chars) - 2)
        if chars[i].isalpha() and chars[i + 1].isalpha():
            chars[i], chars[i + 1] = chars[i + 1], chars[i]  # transposition
        else:
            del chars[i]
    return "".join(chars)


EDITS = {
    "exact": lambda s, rng: s,
    "case_punct": lambda s, rng: s.upper().rstrip(".") + " !",
    "typos": lambda s, rng: _typo(s, rng, 2),
    "prefix": lambda s, rng: "Is it true that " + s[0].lower() + s[1:].rstrip(".") + "?",
    "drop_word": lambda s, rng: " ".join(w for i, w in enumerate(s.split()) if i != len(s.split()) // 2),
    "typo_and_prefix": lambda s, rng: "Evidence: " + _typo(s, rng, 1),
}


@pytest.fixture(scope="module")
def mined(load, tmp_path_factory):
    c = load("scifact")
    embed = default_embedder()
    test = c.queries_for("test").to_pylist()
    # plant copies of test claims that have no sibling in the test set itself (SciFact's test set
    # has pairs like "Macrolides protect against MI" / "Macrolides have no protective effect against
    # MI" citing the same paper): a copy of one may be attributed to the other, which is still
    # leakage, but then the expected eval id would be ambiguous
    evidence: dict[str, set] = {}
    for r in c.qrels_for("test").to_pylist():
        evidence.setdefault(r["query_id"], set()).add(r["doc_id"])
    e = embed([q["text"] for q in test])
    S = e @ e.T
    np.fill_diagonal(S, 0)
    lonely = [q for q, s in zip(test, S.max(1)) if s < 0.8 and len(q["text"].split()) >= 6
              and not any(evidence.get(q["query_id"], set()) & d for o, d in evidence.items() if o != q["query_id"])]
    rng = random.Random(5)
    sources = rng.sample(lonely, 3 * len(EDITS))
    planted = []
    for n, (kind, fn) in enumerate(EDITS.items()):
        for q in sources[3 * n:3 * n + 3]:
            planted.append({"query_id": f"plant-{kind}-{q['query_id']}", "text": fn(q["text"], rng),
                            "collection": "planted", "split": "train", "source": "existing",
                            "source_doc_id": None, "generator_model": None, "template_version": None,
                            "query_type": None, "roundtrip_rank": None, "decision": "kept",
                            "decision_detail": None, "_source": q["query_id"], "_kind": kind})
    import pyarrow as pa
    from data_schemas import QUERIES
    queries = pa.concat_tables([c.queries, QUERIES.from_records(
        [{k: v for k, v in p.items() if not k.startswith("_")} for p in planted])])
    cfg = RunConfig.model_validate({"work_dir": str(tmp_path_factory.mktemp("leak"))})
    table, report = mine_queries(cfg, c.documents, queries, c.qrels, collection="scifact", embed=embed)
    return c, table.to_pylist(), report, planted


def test_planted_exact_and_lightly_edited_copies_are_caught(mined):
    c, rows, report, planted = mined
    by_id = {r["query_id"]: r for r in rows}
    for p in planted:
        r = by_id[p["query_id"]]
        assert r["decision"] == "leakage", (p["_kind"], p["text"])
        assert f"eval={p['_source']} " in r["decision_detail"], (p["_kind"], r["decision_detail"])
    vias = {p["_kind"]: by_id[p["query_id"]]["decision_detail"].split("via=")[1].split()[0] for p in planted}
    assert vias["exact"] == "exact" and vias["case_punct"] == "exact"  # normalisation makes them exact


def test_lexical_check_alone_catches_typo_copies(mined):
    c, rows, report, planted = mined
    test = {q["query_id"]: q["text"] for q in c.queries_for("test").to_pylist()}
    evals = [EvalQuery(k, v, "test") for k, v in test.items()]
    # edits inside the sentence; an added lead-in ("typo_and_prefix") is left to the embedding check
    typos = [p for p in planted if p["_kind"] in ("typos", "drop_word")]
    leaks = find_leaks([p["text"] for p in typos], evals, embed=None)
    assert [lk.eval_id if lk else None for lk in leaks] == [p["_source"] for p in typos]
    assert {lk.via for lk in leaks} == {"lexical"}


def test_real_train_claims_flagged_only_when_near_copies(mined):
    c, rows, report, planted = mined
    train = [r for r in rows if r["split"] == "train" and not r["query_id"].startswith("plant-")]
    assert len(train) == 809
    test = {q["query_id"]: q["text"] for q in c.queries_for("test").to_pylist()}
    evidence: dict[str, set] = {}
    for r in c.qrels.to_pylist():
        evidence.setdefault(r["query_id"], set()).add(r["doc_id"])
    flagged = [r for r in train if r["decision"] == "leakage"]
    shared_doc = lexical_only = 0
    for r in flagged:
        eid = r["decision_detail"].split("eval=")[1].split()[0]
        if evidence.get(r["query_id"], set()) & evidence.get(eid, set()):
            shared_doc += 1
            continue
        lex, _ = lexical_similarity(r["text"], test[eid])
        assert lex >= 0.75, f"flagged without shared evidence or string overlap: {r['text']!r} ~ {test[eid]!r}"
        lexical_only += 1
    # measured: 140 flagged (2 exact, 126 embedding, 12 lexical), 139 share an evidence document
    # with the matched test claim, 1 is a negation with different cited documents
    assert 110 <= len(flagged) <= 170, len(flagged)
    assert shared_doc >= 0.95 * len(flagged)
    # the guard is not "shares a paper": most train claims citing a test claim's evidence are kept
    test_docs = set().union(*(evidence.get(q, set()) for q in test))
    same_paper = [r for r in train if evidence.get(r["query_id"], set()) & test_docs]
    kept_same_paper = [r for r in same_paper if r["decision"] == "kept"]
    assert len(kept_same_paper) >= 0.3 * len(same_paper), (len(kept_same_paper), len(same_paper))
    kept = sum(r["decision"] == "kept" for r in train)
    assert kept >= 0.8 * len(train)
    print(f"\nSciFact train vs test: flagged {len(flagged)}/809 (shared evidence {shared_doc}, "
          f"string near copy only {lexical_only}); train claims citing a test claim's paper: "
          f"{len(same_paper)}, of which kept {len(kept_same_paper)}; report {report['filters']['leakage']}")


def test_negation_counts_as_leakage(mined):
    c, rows, report, planted = mined
    r = next(r for r in rows if r["query_id"] == "0")
    assert r["text"] == "0-dimensional biomaterials lack inductive properties."
    assert r["decision"] == "leakage" and "eval=1 " in r["decision_detail"]  # "... show inductive properties."


def test_report_counts(mined):
    c, rows, report, planted = mined
    lk = report["filters"]["leakage"]
    assert lk["eval_queries"] == 300
    assert lk["flagged"] == sum(r["decision"] == "leakage" for r in rows) == sum(lk["by_via"].values())
    assert report["decisions"]["leakage"] == lk["flagged"]
    assert lk["by_eval_set"] == {"scifact/test": lk["flagged"]}
