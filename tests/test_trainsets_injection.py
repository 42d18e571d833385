"""Injection-flagged (query, document) pairs and the training views (datasets.exclude_injection_flagged).

Real data: TREC DL19 passages with their NIST graded qrels (0-3) as labels, BM25 candidates. A
JUDGMENTS table flags a few pairs (one judge row of two suffices); by default no flagged pair is in
the reranker RL groups, the SFT groups (fused-label and teacher) or the retriever examples (as a
positive or a negative); with the setting off they are, as before."""
from __future__ import annotations

import pytest

from data_schemas import JUDGMENTS
from grouprank.config import DatasetsConfig, RunConfig
from grouprank.trainsets.common import labels_by_query
from grouprank.trainsets.stage import build_datasets

N_QUERIES = 4


@pytest.fixture(scope="module")
def dl19(load):
    """(documents, queries, candidates, labels) for the first N_QUERIES judged DL19 queries."""
    from tests.support.bm25_candidates import dl19_training_inputs
    return dl19_training_inputs(load("trec_dl19_passage"), N_QUERIES)


def _row(q, d, *, judge="point", kind="pointwise", flag=False, score=5.0, group=None):
    return {"query_id": q, "doc_id": d, "judge_id": judge, "kind": kind, "model": "m", "template_version": "t@1",
            "pass_index": 0, "group_id": group, "score": score, "rank": None, "rationale": "[1] is best.",
            "request_hash": "h", "status": "ok", "error": None, "injection_flag": flag,
            "prompt_tokens": 7, "completion_tokens": 3}


def _pairs(rl, sft, ret) -> dict[str, set[tuple[str, str]]]:
    """(query, doc) pairs per view: RL groups, SFT groups, retriever positives, retriever negatives."""
    return {"rl": {(r["query_id"], d) for r in rl.to_pylist() for d in r["doc_ids"]},
            "sft": {(r["query_id"], d) for r in sft.to_pylist() for d in r["doc_ids"]},
            "pos": {(r["query_id"], r["positive_doc_id"]) for r in ret.to_pylist()},
            "neg": {(r["query_id"], d) for r in ret.to_pylist() for d in r["negative_doc_ids"]}}


def test_flagged_pairs_are_in_no_view_by_default_and_stay_when_off(dl19):
    docs, queries, cand, labels = dl19
    assert DatasetsConfig().exclude_injection_flagged is True
    assert RunConfig().datasets.exclude_injection_flagged is True
    off = DatasetsConfig(exclude_injection_flagged=False)
    labs = labels_by_query(labels)
    q_teacher, q_fused = sorted(labs)[:2]

    # unflagged judgments (a pointwise judge on every labelled pair + two groupwise groups for
    # q_teacher) to learn which documents each view holds today
    rows = [_row(q, d) for q in sorted(labs) for d in labs[q].doc_ids]
    ga, gb = labs[q_teacher].doc_ids[:3], labs[q_teacher].doc_ids[3:6]
    for g, ids in (("A", ga), ("B", gb)):
        rows += [_row(q_teacher, d, judge="gw", kind="groupwise", score=float(9 - 3 * i), group=f"{g}#{i + 1}")
                 for i, d in enumerate(ids)]
    base = _pairs(*build_datasets(off, documents=docs, queries=queries, labels=labels, candidates=cand,
                                  judgments=JUDGMENTS.from_records(rows))[:3])

    # flag: one document of teacher group A, and in q_fused a retriever positive and a negative
    pos = next(p for (q, p) in sorted(base["pos"]) if q == q_fused and (q, p) in base["rl"])
    neg = next(n for (q, n) in sorted(base["neg"]) if q == q_fused)
    flagged = {(q_teacher, ga[0]), (q_fused, pos), (q_fused, neg)}
    assert (q_teacher, ga[0]) in base["sft"] and (q_teacher, ga[0]) in base["rl"]
    # a second judge (not the one above) flags them: any judge row is enough
    judg = JUDGMENTS.from_records(rows + [_row(q, d, judge="other", flag=True) for q, d in sorted(flagged)])

    rl, sft, ret, stats = build_datasets(DatasetsConfig(), documents=docs, queries=queries, labels=labels,
                                         candidates=cand, judgments=judg)
    got = _pairs(rl, sft, ret)
    for view, pairs in got.items():
        assert not (pairs & flagged), f"flagged pairs in the {view} view: {sorted(pairs & flagged)}"
    assert stats["injection_flagged_pairs"] == 3 and stats["injection_flagged_excluded"] == 3
    assert stats["injection_flagged_teacher_groups"] == 1  # group A dropped whole, group B kept
    sft_rows = sft.to_pylist()
    assert [r["doc_ids"] for r in sft_rows if r["query_id"] == q_teacher] == [gb]
    assert sum(r["query_id"] == q_fused for r in rl.to_pylist()) == 3  # the query still has its groups
    assert any(q == q_fused for q, _ in got["pos"])  # ... and its other positives
    # the same document text is not in a prompt of that query either
    from grouprank.prompts.common import clean_text
    text = dict(zip(docs["doc_id"].to_pylist(), docs["text"].to_pylist()))
    assert all(clean_text(text[pos], 3000)[:200] not in r["prompt"][1]["content"] for r in rl.to_pylist() if r["query_id"] == q_fused)

    # setting off: today's behaviour, the flagged pairs are there
    rl2, sft2, ret2, stats2 = build_datasets(off, documents=docs, queries=queries, labels=labels,
                                             candidates=cand, judgments=judg)
    kept = _pairs(rl2, sft2, ret2)
    assert kept == base
    assert (q_fused, pos) in kept["pos"] and (q_fused, neg) in kept["neg"] and (q_teacher, ga[0]) in kept["sft"]
    assert stats2["injection_flagged_pairs"] == 3 and stats2["injection_flagged_excluded"] == 0


def test_no_judgments_no_flags(dl19):
    docs, queries, cand, labels = dl19
    a = build_datasets(DatasetsConfig(), documents=docs, queries=queries, labels=labels, candidates=cand)
    b = build_datasets(DatasetsConfig(exclude_injection_flagged=False), documents=docs, queries=queries,
                       labels=labels, candidates=cand)
    assert a[3]["injection_flagged_pairs"] == 0 == a[3]["injection_flagged_excluded"]
    assert all(x.equals(y) for x, y in zip(a[:3], b[:3]))
