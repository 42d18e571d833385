"""Mining existing queries: collection splits, query files with a column mapping, HF datasets;
the stage contract and the CLI on SciFact (no LLM, no embeddings needed without an eval set)."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_schemas import QUERIES
from grouprank.config import RunConfig
from grouprank.errors import InputError, UserError
from grouprank.queries import sources
from grouprank.queries.mine import mine_queries

ROWS = [{"qid": 1, "question": "what causes scurvy"}, {"qid": 2, "question": "symptoms of scurvy"},
        {"qid": "x3", "question": "  vitamin c sources  "}]


def _write(path, fmt):
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    elif fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        path.write_text("qid" + sep + "question\n" + "".join(f"{r['qid']}{sep}{r['question']}\n" for r in ROWS))
    elif fmt == "parquet":
        pq.write_table(pa.table({"qid": [str(r["qid"]) for r in ROWS], "question": [r["question"] for r in ROWS]}), path)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "tsv", "parquet"])
def test_query_file_with_column_mapping(tmp_path, fmt):
    p = tmp_path / f"my_queries.{fmt}"
    _write(p, fmt)
    recs = sources.from_file(p, id_column="qid", text_column="question", split="dev", id_prefix="f:")
    assert [r["query_id"] for r in recs] == ["f:1", "f:2", "f:x3"]
    assert recs[2]["text"] == "vitamin c sources"
    assert all(r["source"] == "existing" and r["split"] == "dev" and r["collection"] == "my_queries"
               and r["decision"] == "kept" for r in recs)
    QUERIES.from_records(recs)  # valid records


def test_hf_dataset_on_disk(tmp_path):
    import datasets
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:2]),
                               "validation": datasets.Dataset.from_list([{"qid": 9, "question": "q nine"}])})
    dd.save_to_disk(str(tmp_path / "hfq"))
    with pytest.raises(InputError, match="say which one with hf_split"):
        sources.from_file(tmp_path / "hfq", id_column="qid", text_column="question")
    recs = sources.from_file(tmp_path / "hfq", id_column="qid", text_column="question", hf_split="validation")
    assert [(r["query_id"], r["text"], r["collection"]) for r in recs] == [("9", "q nine", "hfq")]


def test_bad_query_records_are_named_or_quarantined(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text('{"qid": 1, "question": "ok"}\n{"qid": 2}\n{"qid": 1, "question": "dup"}\nnot json\n'
                 '{"qid": 4, "question": 5}\n')
    with pytest.raises(InputError, match=r"q.jsonl, line 2, field 'question': missing field"):
        sources.from_file(p, id_column="qid", text_column="question")
    quarantine: list = []
    recs = sources.from_file(p, id_column="qid", text_column="question", quarantine=quarantine)
    assert [r["query_id"] for r in recs] == ["1"]
    reasons = sorted(q["reason"] for q in quarantine)
    assert len(quarantine) == 4 and any("duplicate id" in r for r in reasons)
    assert any("malformed JSON" in r for r in reasons) and any("expected text" in r for r in reasons)


def test_id_clash_between_sources_is_an_error(tmp_path):
    p = tmp_path / "q.jsonl"
    _write(p, "jsonl")
    a = sources.from_file(p, id_column="qid", text_column="question")
    with pytest.raises(UserError, match="appears twice.*id_prefix"):
        sources.check_unique_ids(a + a)


def test_unknown_split_is_named(load):
    with pytest.raises(UserError, match=r"\['dev'\] not in the collection"):
        sources.from_collection(load("scifact"), ["dev"])


def test_scifact_train_split_yields_809_queries_with_provenance(load, tmp_path):
    c = load("scifact")
    cfg = RunConfig.model_validate({"work_dir": str(tmp_path), "queries": {"leakage_eval_splits": []}})
    table, report = mine_queries(cfg, c.documents, c.queries, c.qrels, collection=c.name)
    assert table.num_rows == 809 and report["existing"] == 809
    rows = table.to_pylist()
    assert {r["split"] for r in rows} == {"train"} and {r["source"] for r in rows} == {"existing"}
    assert {r["collection"] for r in rows} == {"scifact"}
    assert all(r["source_doc_id"] is None and r["generator_model"] is None for r in rows)
    train = {r["query_id"]: r["text"] for r in c.queries_for("train").to_pylist()}
    assert {r["query_id"]: r["text"] for r in rows} == train
    # SciFact's train split holds two claims twice under different ids: exact dedup records them
    dups = [r for r in rows if r["decision"] == "duplicate"]
    assert len(dups) == 2 and report["kept"] == 807
    for d in dups:
        rep = d["decision_detail"].removeprefix("of=")
        assert train[rep] == d["text"] and rep != d["query_id"]


def test_stage_contract_and_cli(load, tmp_path):
    from grouprank.cli import main
    from grouprank.collections.export import export_collection
    from grouprank.executor import run_stage
    from grouprank.queries.stage import STAGE
    c = load("scifact")
    paths = export_collection(c, tmp_path / "collection")
    cfg = RunConfig.model_validate({"work_dir": str(tmp_path / "w"),
                                    "queries": {"leakage_eval_splits": [], "max_queries": 100}})
    res = run_stage(STAGE, cfg, {k: paths[k] for k in ("documents", "queries", "qrels")})
    out = res["outputs"]["mined_queries"]
    assert out.endswith("mine_queries/mined_queries.parquet")
    t = QUERIES.read(out)
    assert t.num_rows == 100 and res["stats"]["total"] == 100
    assert all(isinstance(v, (int, float, str)) for v in res["stats"].values())
    # the CLI, mining a file on top of the split, without an eval set
    qf = tmp_path / "extra.csv"
    qf.write_text("id,claim\nx1,Scurvy is caused by vitamin C deficiency.\n")
    rc = main(["mine-queries", "--work-dir", str(tmp_path / "cli"), "--no-eval", "--file", str(qf),
               "--id-column", "id", "--text-column", "claim", "--set", "queries.max_queries=5"])
    assert rc == 0
    t = QUERIES.read(tmp_path / "cli" / "mine_queries" / "mined_queries.parquet")
    assert t.num_rows == 6 and "x1" in t["query_id"].to_pylist()


def test_one_split_collection_keeps_a_held_out_share_for_evaluation(load, tmp_path):
    """Cranfield has only test queries: with the defaults (splits auto, leakage_eval_splits auto) a
    seeded 20 % is not mined, guards the generated queries, and is what the evaluate stage and the
    retriever's before/after evaluation score; the rest is mined. (Mining every test query used to
    leave nothing to evaluate, and `queries.splits=[test]` flagged every query as leakage.)"""
    from grouprank.evaluation.stage import eval_queries as evaluation_queries
    from grouprank.queries.mine import eval_queries as guard_set
    from grouprank.retriever_training.stage import _eval_set
    c = load("cranfield")
    cfg = RunConfig.model_validate({"work_dir": str(tmp_path), "data": {"collection": "cranfield"}})
    table, report = mine_queries(cfg, c.documents, c.queries, c.qrels, collection=c.name)
    judged = set(c.qrels["query_id"].to_pylist())
    mined = {r["query_id"] for r in table.to_pylist() if r["decision"] == "kept"}
    held = {e.query_id for e in guard_set(cfg, c.queries, c.name)}
    assert report["auto_heldout_queries"] == len(held) and 0.15 * len(judged) < len(held) < 0.25 * len(judged)
    not_kept = {r["query_id"] for r in table.to_pylist() if r["decision"] != "kept"}  # near copies of held-out ones
    assert not mined & held and mined | held | not_kept == judged and len(not_kept) < 10
    assert not held & set(table.column("query_id").to_pylist()) and report["leakage_eval_splits"] == []
    assert held == sources.holdout_ids(sorted(judged), 0.2, cfg.seed)  # seeded, stable
    assert sources.holdout_ids(sorted(judged), 0.2, cfg.seed + 1) != held
    # the evaluate stage leaves the training queries out: the held-out share is scored (and the few
    # existing queries not kept, which nothing trained on)
    texts, qr, info = evaluation_queries(cfg, c.queries, c.qrels, table)
    assert set(texts) == held | not_kept and set(qr["query_id"]) == set(texts)
    assert info["excluded_training_queries"] == len(mined)
    # so does the retriever's before/after evaluation (eval_split test, minus the training queries)
    import pandas as pd
    ex = pd.DataFrame({"query_id": sorted(mined), "anchor": [r["text"] for r in sorted(table.to_pylist(),
                       key=lambda r: r["query_id"]) if r["query_id"] in mined], "positive": "p", "negative_1": "n"})
    train, ev_texts, ev_qrels, desc = _eval_set(cfg, ex, documents=c.documents, queries=c.queries, qrels=c.qrels,
                                                eval_queries=None, eval_qrels=None)
    assert len(train) == len(ex) and set(ev_texts) == held | not_kept and f"{len(mined)} training queries left out" in desc
    # a collection with a train split is unchanged: train mined, test guarded, nothing held out
    sf = load("scifact")
    cfg2 = RunConfig.model_validate({"work_dir": str(tmp_path / "sf")})
    assert not sources.auto_holdout_applies(cfg2.queries.splits, sources.query_splits(sf.queries))
    assert {e.query_id for e in guard_set(cfg2, sf.queries, sf.name)} == set(sf.queries_for("test")["query_id"].to_pylist())
