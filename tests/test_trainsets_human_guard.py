"""Human labels guard the synthetic ones: where a mined query carries human qrels and
`datasets.human_guard` allows it, no human-cited document becomes an exported hard negative, and the
disagreement between the synthetic grades and the human qrels is reported. Also: the exported
retriever view holds what the training run trains with (same rows, same negatives)."""
from __future__ import annotations

import pyarrow as pa
import pytest

from grouprank.config import DatasetsConfig, RunConfig
from grouprank.trainsets.human import labels_from_qrels
from grouprank.trainsets.stage import build_datasets

N_QUERIES = 8


@pytest.fixture(scope="module")
def case(load):
    """8 judged DL19 queries, BM25 top-100 candidates, and *synthetic* labels that contradict the
    humans: every human positive (grade >= 1) among each query's first 30 candidates gets synthetic
    grade 0, the rest keep the human grade."""
    from tests.support.bm25_candidates import bm25_candidates
    c = load("trec_dl19_passage")
    qids = sorted(set(c.qrels["query_id"].to_pylist()))[:N_QUERIES]
    rows, cand = bm25_candidates(c, qids)
    top30 = {(x["query_id"], x["doc_id"]) for x in rows if x["rank"] <= 30}
    qr = c.qrels.to_pandas()
    qr = qr[qr.query_id.isin(qids)]
    flipped = qr.copy()
    hit = flipped.apply(lambda x: (x.query_id, x.doc_id) in top30 and x.grade >= 1, axis=1)
    flipped.loc[hit, "grade"] = 0
    assert hit.sum() > 10  # the case really contradicts the humans
    synthetic = labels_from_qrels(pa.Table.from_pandas(flipped[["query_id", "doc_id", "grade"]],
                                                       preserve_index=False), cand, query_ids=qids)
    human_pos = {(q, d) for q, d, g in zip(qr.query_id, qr.doc_id, qr.grade) if g >= 1}
    return c.documents, c.queries, cand, synthetic, c.qrels, human_pos, int(hit.sum())


def _build(case, **kw):
    docs, queries, cand, labels, qrels, _, _ = case
    dc = DatasetsConfig(negatives_per_example=4, **kw)
    return build_datasets(dc, documents=docs, queries=queries, labels=labels, candidates=cand, qrels=qrels)


def test_no_human_positive_becomes_a_negative(case):
    *_, human_pos, n_flipped = case
    _, _, off, s_off = _build(case, human_guard=False)
    leaked = [(r["query_id"], d) for r in off.to_pylist() for d in r["negative_doc_ids"]
              if (r["query_id"], d) in human_pos]
    assert leaked, "the case must make the synthetic labels export human positives as negatives"
    assert "human_disagreement" not in s_off and s_off["guard_human_positive"] == 0

    _, _, on, s_on = _build(case, human_guard=True)
    assert on.num_rows > 0
    for r in on.to_pylist():
        assert not [d for d in r["negative_doc_ids"] if (r["query_id"], d) in human_pos]
    assert s_on["guard_human_positive"] >= len({x for x in leaked})
    dis = s_on["human_disagreement"]
    assert dis["queries_with_human_qrels"] == N_QUERIES
    # every flipped pair is labelled grade 0, so all of them are reported below the positive grade
    assert dis["synthetic_grade_of_human_positives"]["0"] >= n_flipped
    assert dis["human_positives_below_positive_grade"] >= n_flipped
    assert dis["human_positives_kept_out_of_negatives"] == s_on["guard_human_positive"]
    # the guard only removes negatives: positives are untouched
    assert sorted(zip(on["query_id"].to_pylist(), on["positive_doc_id"].to_pylist())) == \
        sorted(zip(off["query_id"].to_pylist(), off["positive_doc_id"].to_pylist()))


def test_human_guard_needs_the_qrels_of_the_same_queries(case):
    docs, queries, cand, labels, qrels, _, _ = case
    # qrels of other queries only: nothing to guard, nothing reported
    other = qrels.filter(pa.compute.invert(pa.compute.is_in(qrels["query_id"],
                                                            pa.array(sorted(set(labels["query_id"].to_pylist()))))))
    _, _, _, st = build_datasets(DatasetsConfig(negatives_per_example=4), documents=docs, queries=queries,
                                 labels=labels, candidates=cand, qrels=other)
    assert st["human_guard"] is False and st["guard_human_positive"] == 0


def test_exported_retriever_view_is_what_training_uses(case, tmp_path):
    """Default configuration: the export's `retriever/` view, read back by the training code, gives
    exactly the training frame built from the retriever_examples table (same rows, same negatives)."""
    import pandas as pd

    from grouprank.retriever_training.data import normalise_examples, read_examples, to_training_frame
    from grouprank.trainsets.export_stage import export_datasets
    docs, queries, cand, labels, qrels, _, _ = case
    cfg = RunConfig(work_dir=str(tmp_path), data={"collection": "trec_dl19_passage"})
    rl, sft, ret, stats = build_datasets(cfg.datasets, documents=docs, queries=queries, labels=labels,
                                         candidates=cand, qrels=qrels)
    # at least one example with several eligible negatives, so a wrong width would show
    assert ret.num_rows > 0
    export_datasets(cfg, tmp_path / "export", documents=docs, queries=queries, labels=labels, reranker_rl=rl,
                    reranker_sft=sft, retriever_examples=ret, build_stats=stats,
                    build_config=cfg.datasets.model_dump())
    rc = cfg.retriever
    from_table, st_a = to_training_frame(normalise_examples(ret.to_pandas()), rc.n_negatives,
                                         drop_short=rc.drop_short, seed=cfg.seed)
    from_export, st_b = to_training_frame(read_examples(tmp_path / "export" / "retriever"), rc.n_negatives,
                                          drop_short=rc.drop_short, seed=cfg.seed)
    assert st_a["n_negatives"] == st_b["n_negatives"] == cfg.datasets.negatives_per_example
    assert st_b["rows_dropped_short"] == 0  # the export holds no row the training would drop
    pd.testing.assert_frame_equal(from_table.reset_index(drop=True), from_export.reset_index(drop=True))
    exported_cols = [c for c in pd.read_parquet(tmp_path / "export" / "retriever").columns if c.startswith("negative_")]
    assert len(exported_cols) == rc.n_negatives
