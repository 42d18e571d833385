"""Stage `export`: the datasets as a folder users take away: sharded Parquet views, a BEIR folder,
TREC qrels, a grade histogram, a manifest with checksums and a dataset card (layout: `export`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import pyarrow as pa

from data_schemas import (DOCUMENTS, JUDGMENTS, LABELS, QRELS, QUERIES, RERANKER_RL, RERANKER_SFT,
                          RETRIEVER_EXAMPLES)
from data_schemas.base import read_extra
from grouprank.stage import Stage, StageContext, StageResult, file, folder, table

from .common import as_table, injection_excluded_pairs, kept_queries
from grouprank.prompts.groupwise import TEMPLATE_VERSION

# the exported views, one folder of Parquet shards each
VIEWS = ("reranker_rl", "reranker_sft", "retriever", "retriever_examples", "labels", "qrels")


def export_datasets(cfg, out_dir: str | Path, *, documents, queries, labels, reranker_rl, reranker_sft,
                    retriever_examples, judgments=None, qrels=None, build_stats: Mapping | None = None,
                    build_config: Mapping | None = None) -> dict:
    """Write the export folder (see export.py for the layout); returns {"outputs", "stats"}.

    `build_stats` / `build_config` (the DatasetsConfig the examples were built with) default to the
    metadata stored with the reranker_rl table by the build stage, else to {} / cfg.datasets. The card
    describes the examples with the build configuration; the export itself uses only cfg's shard
    bounds.

    The label files (`labels/`, `qrels/`, `beir/qrels/train.tsv`, `qrels.train.trec`) agree with the
    training views: with `exclude_injection_flagged` (the build configuration's) an injection-flagged
    pair and the pairs judged in the same prompt are in none of them (counted on the card)."""
    from .card import (grade_counts, grade_histogram_png, human_agreement, judge_agreement, judges_summary,
                       prompt_lengths, render_card, write_card)
    from .export import (parquet_rows, sha256_file, st_table, st_view, synthetic_qrels, write_beir,
                         write_sharded, write_text_atomic, write_trec)

    dc = cfg.datasets
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stored = read_extra(reranker_rl) if isinstance(reranker_rl, (str, Path, pa.Table)) else {}
    build_stats = dict(build_stats if build_stats is not None else stored.get("build", {}))
    bconf = dict(build_config if build_config is not None else
                 stored.get("datasets_config", dc.model_dump(mode="json")))
    labels_t = as_table(labels, LABELS)
    queries_t = as_table(queries, QUERIES)
    docs_t = as_table(documents, DOCUMENTS)
    judg_t = as_table(judgments, JUDGMENTS)
    qrels_t = as_table(qrels, QRELS)
    exclude_flagged = bool(bconf.get("exclude_injection_flagged", dc.exclude_injection_flagged))
    flagged, neighbours = injection_excluded_pairs(judg_t, exclude_flagged)
    n_labels_in = labels_t.num_rows
    if exclude_flagged and (flagged or neighbours):
        labels_t = _drop_label_pairs(labels_t, flagged | neighbours)
    labels_excluded = n_labels_in - labels_t.num_rows
    rl = as_table(reranker_rl, RERANKER_RL)
    sft = as_table(reranker_sft, RERANKER_SFT)
    ret = as_table(retriever_examples, RETRIEVER_EXAMPLES)
    n_neg = int(bconf.get("negatives_per_example", dc.negatives_per_example))
    st, short = st_view(ret, n_neg)
    syn = synthetic_qrels(labels_t)
    tv = TEMPLATE_VERSION
    extra = {"datasets_config": bconf, "template_version": tv}
    shard = dict(max_rows=dc.shard_max_rows, max_bytes=dc.shard_max_bytes)
    views = {
        "reranker_rl": (rl, RERANKER_RL), "reranker_sft": (sft, RERANKER_SFT), "retriever": (st, st_table(n_neg)),
        "retriever_examples": (ret, RETRIEVER_EXAMPLES), "labels": (labels_t, LABELS), "qrels": (syn, QRELS),
    }
    assert tuple(views) == VIEWS
    outputs: dict[str, str] = {"export": str(out)}
    files: list[dict] = []
    view_info: dict[str, dict] = {}
    for name, (view, tdef) in views.items():
        paths = write_sharded(view, tdef, out / name, extra={**extra, "view": name}, **shard)
        outputs[name] = str(out / name)
        view_info[name] = {"glob": f"{name}/train-*.parquet", "rows": view.num_rows, "shards": len(paths)}
        for p in paths:
            files.append({"path": p.relative_to(out).as_posix(), "schema": tdef.name, "version": tdef.version,
                          "rows": parquet_rows(p), "bytes": p.stat().st_size})
    kept = kept_queries(queries_t)
    beir = write_beir(out / "beir", docs_t, kept, syn)
    trec = write_trec(out / "qrels.train.trec", syn)
    outputs.update({"beir": str(out / "beir"), "trec_qrels": str(trec)})
    for key, p in [*beir.items(), ("trec_qrels", trec)]:
        lines = sum(1 for _ in open(p, encoding="utf-8"))
        files.append({"path": Path(p).relative_to(out).as_posix(), "schema": key, "version": "",
                      # data rows: the TSV's header line is not one
                      "rows": lines - 1 if key == "beir_qrels" else lines, "bytes": Path(p).stat().st_size})

    lab_counts = grade_counts(labels_t)
    rl_counts: dict[int, int] = {}
    for gg in rl.column("gold_grades").to_pylist():
        for g in gg:
            rl_counts[int(g)] = rl_counts.get(int(g), 0) + 1
    hist = grade_histogram_png(out / "grade_histogram.png", lab_counts, dict(sorted(rl_counts.items())))
    methods: dict[str, int] = {}
    for m in labels_t.column("method").to_pylist():
        methods[m] = methods.get(m, 0) + 1
    judges = judges_summary(judg_t, labels_t)
    agree = judge_agreement(judg_t)
    human = human_agreement(labels_t, qrels_t)
    counts = {
        "documents (corpus.jsonl)": docs_t.num_rows, "queries kept": len(kept),
        "queries with labels": len(set(labels_t.column("query_id").to_pylist())),
        "labelled pairs": labels_t.num_rows,
        "labelled pairs left out (injection-flagged or judged in the same prompt)": labels_excluded,
        "reranker RL examples": rl.num_rows,
        "reranker RL queries": len(set(rl.column("query_id").to_pylist())),
        "reranker SFT examples": sft.num_rows, "retriever examples": ret.num_rows,
        f"retriever rows with {n_neg} negatives (exported to retriever/)": st.num_rows,
        "retriever examples left out (fewer negatives)": short,
    }
    run_cfg = cfg.model_dump(mode="json")
    run_cfg["work_dir"] = "<work_dir>"
    schemas = {t.name: t.version for t in (RERANKER_RL, RERANKER_SFT, RETRIEVER_EXAMPLES, LABELS, QRELS, st_table(n_neg))}
    text = render_card(name=f"{cfg.name} ({cfg.data.collection})", files=files, views=view_info, counts=counts,
                       build_stats=build_stats, label_grades=lab_counts, judges=judges, agreement_rows=agree,
                       human=human, methods=methods, config=bconf, run_config=run_cfg,
                       schemas=schemas, template_version=tv, histogram=hist.name, seed=cfg.seed,
                       collection=cfg.data.collection, license=dc.card_license, language=dc.card_language,
                       columns={name: tdef for name, (_, tdef) in views.items()}, lengths=prompt_lengths(rl),
                       retriever_training=retriever_use(cfg, ret))
    readme = write_card(out / "README.md", text)
    manifest_files = []
    for f in sorted(files, key=lambda f: f["path"]) + [
            {"path": "README.md", "schema": "card", "version": ""},
            {"path": hist.name, "schema": "png", "version": ""}]:
        p = out / f["path"]
        manifest_files.append({**f, "bytes": p.stat().st_size, "sha256": sha256_file(p)})
    manifest = write_text_atomic(out / "manifest.json", json.dumps(
        {"name": cfg.name, "collection": cfg.data.collection, "template_version": tv, "schemas": schemas,
         "files": manifest_files}, indent=2, sort_keys=True))
    outputs.update({"readme": str(readme), "histogram": str(hist), "manifest": str(manifest)})
    stats = {"files": len(manifest_files), "bytes": sum(f["bytes"] for f in manifest_files),
             "reranker_rl_rows": rl.num_rows, "reranker_sft_rows": sft.num_rows, "retriever_rows": st.num_rows,
             "retriever_rows_left_out_short": short, "retriever_examples_rows": ret.num_rows,
             "labels_rows": labels_t.num_rows, "qrels_rows": syn.num_rows,
             "labels_rows_excluded_injection": labels_excluded,
             "shards": sum(v["shards"] for v in view_info.values())}
    return {"outputs": outputs, "stats": stats}


def retriever_use(cfg, examples: pa.Table) -> dict:
    """How the run's retriever training uses the exported retriever examples (for the card): the
    positives-per-query cap and the rows it selects, negatives per row, batch size and sampler."""
    from .retriever import select_examples
    rc = cfg.retriever
    out = {"rows": examples.num_rows, "max_positives_per_query": rc.max_positives_per_query,
           "n_negatives": rc.n_negatives, "batch_size": rc.batch_size, "batch_sampler": rc.batch_sampler}
    if rc.max_positives_per_query and examples.num_rows:
        out["selected_rows"] = len(select_examples(examples.select(["query_id", "positive_grade"]).to_pandas(),
                                                   rc.max_positives_per_query))
    return out


def _drop_label_pairs(labels: pa.Table, pairs: set[tuple[str, str]]) -> pa.Table:
    keep = [(str(q), str(d)) not in pairs for q, d in zip(labels.column("query_id").to_pylist(),
                                                          labels.column("doc_id").to_pylist())]
    return labels.filter(pa.array(keep, pa.bool_()))


def run(inputs: dict, cfg, ctx: StageContext) -> StageResult:
    res = export_datasets(cfg, ctx.out_dir, documents=inputs["documents"], queries=inputs["mined_queries"],
                          labels=inputs["labels"], reranker_rl=inputs["reranker_rl"],
                          reranker_sft=inputs["reranker_sft"], retriever_examples=inputs["retriever_examples"],
                          judgments=inputs.get("judgments"), qrels=inputs.get("qrels"))
    o = res["outputs"]
    return StageResult({"export": Path(o["export"]), "dataset_card": Path(o["readme"]),
                        "manifest": Path(o["manifest"]), "histogram": Path(o["histogram"])}, res["stats"])


STAGE = Stage(
    name="export", title="export", run=run,
    help="sharded Parquet, BEIR, TREC qrels and a dataset card",
    inputs=(table("documents", DOCUMENTS), table("mined_queries", QUERIES), table("labels", LABELS),
            table("reranker_rl", RERANKER_RL), table("reranker_sft", RERANKER_SFT),
            table("retriever_examples", RETRIEVER_EXAMPLES), table("judgments", JUDGMENTS, optional=True),
            # human qrels: only for the card's agreement line
            table("qrels", QRELS, optional=True)),
    outputs=(folder("export", "."), file("dataset_card", "README.md"), file("manifest", "manifest.json"),
             file("histogram", "grade_histogram.png")),
    sections=(),  # every section: the dataset card holds the whole run configuration
)
