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
    # the other documents of group A were judged with the attack in the same prompt: out as well
    neighbours = {(q_teacher, d) for d in ga[1:]}
    for view, pairs in got.items():
        assert not (pairs & flagged), f"flagged pairs in the {view} view: {sorted(pairs & flagged)}"
        assert not (pairs & neighbours), f"same-prompt neighbours in the {view} view: {sorted(pairs & neighbours)}"
    assert stats["injection_flagged_pairs"] == 3 and stats["injection_neighbour_pairs"] == 2
    assert stats["injection_flagged_excluded"] == 5
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


def test_exported_label_files_hold_no_flagged_pair_nor_its_prompt_neighbours(dl19, tmp_path):
    """Issue 27, item 4: attacks from the hand-written fixture planted in real DL19 passages, flagged by
    the judge pool's detector; after build + export, no flagged pair and no pair judged in the same
    groupwise prompt is in any exported file (labels/, qrels/, beir/qrels/train.tsv, qrels.train.trec,
    the reranker and retriever views), and the card counts them."""
    import json
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    from grouprank.judges.base import JudgePool
    from grouprank.trainsets.export_stage import export_datasets
    docs, queries, cand, labels = dl19
    attacks = json.loads((Path(__file__).parent / "fixtures" / "injection_cases.json").read_text())["attacks"]
    labs = labels_by_query(labels)
    # per query: its best-graded document and two more carry an attack
    planted: dict[str, str] = {}
    for i, q in enumerate(sorted(labs)):
        ids = labs[q].doc_ids
        for j, d in enumerate([ids[0], ids[len(ids) // 2], ids[-1]]):
            planted[d] = attacks[(3 * i + j) % len(attacks)]
    rows = docs.to_pylist()
    for r in rows:
        if r["doc_id"] in planted:
            r["text"] = r["text"][:200] + " " + planted[r["doc_id"]] + " " + r["text"][200:]
    docs2 = pa.Table.from_pylist(rows, schema=docs.schema)
    import pandas as pd
    judged = pd.DataFrame([(q, d) for q in sorted(labs) for d in labs[q].doc_ids], columns=["query_id", "doc_id"])
    pool = JudgePool.from_tables(judged, docs2, queries)
    # a pointwise judge on every labelled pair; a groupwise judge on groups of 4 in fused order
    judg_rows, neighbours, flagged = [], set(), set()
    for q in sorted(labs):
        ids = labs[q].doc_ids
        for d in ids:
            f = pool.injection_flag(d)
            judg_rows.append(_row(q, d, flag=f))
            if f:
                flagged.add((q, d))
        for g in range(0, len(ids), 4):
            grp = ids[g:g + 4]
            hit = any(pool.injection_flag(d) for d in grp)
            for k, d in enumerate(grp):
                r = _row(q, d, judge="gw", kind="groupwise", flag=pool.injection_flag(d), group=f"g{g}#{k + 1}")
                r["request_hash"] = f"{q}-g{g}"
                judg_rows.append(r)
                if hit:
                    neighbours.add((q, d))
    assert len(flagged) == 3 * len(labs), "every planted attack is flagged by the detector"
    neighbours -= flagged
    assert neighbours
    judg = JUDGMENTS.from_records(judg_rows)
    cfg = RunConfig(datasets={"negatives_per_example": 2})
    rl, sft, ret, stats = build_datasets(cfg.datasets, documents=docs2, queries=queries, labels=labels,
                                         candidates=cand, judgments=judg)
    assert stats["injection_flagged_pairs"] == len(flagged)
    out = tmp_path / "export"
    res = export_datasets(cfg, out, documents=docs2, queries=queries, labels=labels, reranker_rl=rl,
                          reranker_sft=sft, retriever_examples=ret, judgments=judg, build_stats=stats,
                          build_config=cfg.datasets.model_dump(mode="json"))
    bad = flagged | neighbours
    found: dict[str, set] = {}
    for view in ("labels", "qrels", "retriever_examples", "reranker_rl", "reranker_sft"):
        t = pq.read_table(out / view)
        pairs = set()
        for r in t.to_pylist():
            ds = r.get("doc_ids") or ([r["doc_id"]] if "doc_id" in r else
                                      [r["positive_doc_id"], *r["negative_doc_ids"]])
            pairs |= {(r["query_id"], d) for d in ds}
        found[view] = pairs
    found["beir"] = {tuple(ln.split("\t")[:2]) for ln in (out / "beir" / "qrels" / "train.tsv").read_text().splitlines()[1:]}
    found["trec"] = {(ln.split()[0], ln.split()[2]) for ln in (out / "qrels.train.trec").read_text().splitlines()}
    for view, pairs in found.items():
        assert pairs, view
        assert not (pairs & bad), f"{view}: {sorted(pairs & bad)[:5]}"
    # the retriever's text view holds no planted attack either
    st = pq.read_table(out / "retriever").to_pylist()
    assert st and not any(a in v for r in st for v in r.values() for a in planted.values())
    assert res["stats"]["labels_rows_excluded_injection"] == len(bad) == labels.num_rows - found_labels_rows(out)
    assert "injection-flagged or judged in the same prompt" in (out / "README.md").read_text()


def found_labels_rows(out) -> int:
    import pyarrow.parquet as pq
    return pq.read_table(out / "labels").num_rows
