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


def run(inputs: dict, cfg, ctx: StageContext) -> StageResult:
    """The export stage: the datasets into the stage's folder (see export.py for the layout). The card
    describes the examples with the configuration they were built with (stored with the reranker_rl
    table by the build stage); the export itself uses only cfg's shard bounds.

    The label files (`labels/`, `qrels/`, `beir/qrels/train.tsv`, `qrels.train.trec`) agree with the
    training views: with `exclude_injection_flagged` (the build configuration's) an injection-flagged
    pair and the pairs judged in the same prompt are in none of them (counted on the card)."""
    stored = read_extra(inputs["reranker_rl"])
    return _export(cfg, ctx, inputs, dict(stored.get("build", {})),
                   dict(stored.get("datasets_config", cfg.datasets.model_dump(mode="json"))))


def export_datasets(cfg, out_dir: str | Path, *, documents, queries, labels, reranker_rl, reranker_sft,
                    retriever_examples, judgments=None, qrels=None, build_stats: Mapping | None = None,
                    build_config: Mapping | None = None) -> dict:
    """The export stage on tables or files in memory (benches, tests): the stage's own code with a
    context on `out_dir`; `build_stats` / `build_config` default to what the reranker_rl table stores.
    -> {"outputs": {name: path}, "stats"}."""
    inputs = {"documents": as_table(documents, DOCUMENTS), "mined_queries": as_table(queries, QUERIES),
              "labels": as_table(labels, LABELS), "reranker_rl": reranker_rl,
              "reranker_sft": as_table(reranker_sft, RERANKER_SFT),
              "retriever_examples": as_table(retriever_examples, RETRIEVER_EXAMPLES),
              "judgments": as_table(judgments, JUDGMENTS), "qrels": as_table(qrels, QRELS)}
    stored = read_extra(reranker_rl) if isinstance(reranker_rl, (str, Path, pa.Table)) else {}
    inputs["reranker_rl"] = as_table(reranker_rl, RERANKER_RL)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = StageContext(out_dir=out, work_dir=cfg.work_path, cfg=cfg)
    res = _export(cfg, ctx, inputs, dict(build_stats if build_stats is not None else stored.get("build", {})),
                  dict(build_config if build_config is not None else
                       stored.get("datasets_config", cfg.datasets.model_dump(mode="json"))))
    o = res.outputs
    return {"outputs": {"export": str(out), **{v: str(out / v) for v in VIEWS}, "beir": str(out / "beir"),
                        "trec_qrels": str(out / "qrels.train.trec"), "readme": str(o["dataset_card"]),
                        "histogram": str(o["histogram"]), "manifest": str(o["manifest"])},
            "stats": res.stats}


def _export(cfg, ctx: StageContext, inputs: dict, build_stats: dict, bconf: dict) -> StageResult:
    from .card import grade_histogram_png, write_card
    from .export import st_table, st_view, synthetic_qrels, write_beir, write_trec

    dc = cfg.datasets
    out = ctx.out_dir
    labels_t, judg_t = inputs["labels"], inputs.get("judgments")
    exclude_flagged = bool(bconf.get("exclude_injection_flagged", dc.exclude_injection_flagged))
    flagged, neighbours = injection_excluded_pairs(judg_t, exclude_flagged)
    n_labels_in = labels_t.num_rows
    if exclude_flagged and (flagged or neighbours):
        labels_t = _drop_label_pairs(labels_t, flagged | neighbours)
    rl, ret = inputs["reranker_rl"], inputs["retriever_examples"]
    n_neg = int(bconf.get("negatives_per_example", dc.negatives_per_example))
    st, short = st_view(ret, n_neg)
    syn = synthetic_qrels(labels_t)
    views = {
        "reranker_rl": (rl, RERANKER_RL), "reranker_sft": (inputs["reranker_sft"], RERANKER_SFT),
        "retriever": (st, st_table(n_neg)), "retriever_examples": (ret, RETRIEVER_EXAMPLES),
        "labels": (labels_t, LABELS), "qrels": (syn, QRELS),
    }
    assert tuple(views) == VIEWS
    files, view_info = _write_views(cfg, out, views, bconf)
    kept = kept_queries(inputs["mined_queries"])
    beir = write_beir(out / "beir", inputs["documents"], kept, syn)
    trec = write_trec(out / "qrels.train.trec", syn)
    for key, p in [*beir.items(), ("trec_qrels", trec)]:
        lines = sum(1 for _ in open(p, encoding="utf-8"))
        files.append({"path": Path(p).relative_to(out).as_posix(), "schema": key, "version": "",
                      # data rows: the TSV's header line is not one
                      "rows": lines - 1 if key == "beir_qrels" else lines, "bytes": Path(p).stat().st_size})
    lab_counts = grade_counts_of(labels_t)
    hist = grade_histogram_png(out / "grade_histogram.png", lab_counts, _rl_grade_counts(rl))
    counts = {
        "documents (corpus.jsonl)": inputs["documents"].num_rows, "queries kept": len(kept),
        "queries with labels": len(set(labels_t.column("query_id").to_pylist())),
        "labelled pairs": labels_t.num_rows,
        "labelled pairs left out (injection-flagged or judged in the same prompt)": n_labels_in - labels_t.num_rows,
        "reranker RL examples": rl.num_rows,
        "reranker RL queries": len(set(rl.column("query_id").to_pylist())),
        "reranker SFT examples": inputs["reranker_sft"].num_rows, "retriever examples": ret.num_rows,
        f"retriever rows with {n_neg} negatives (exported to retriever/)": st.num_rows,
        "retriever examples left out (fewer negatives)": short,
    }
    schemas = {t.name: t.version for t in (RERANKER_RL, RERANKER_SFT, RETRIEVER_EXAMPLES, LABELS, QRELS, st_table(n_neg))}
    text = _card_text(cfg, inputs, labels_t, judg_t, files, view_info, counts, build_stats, bconf, lab_counts,
                      schemas, hist.name, views)
    readme = write_card(out / "README.md", text)
    manifest = _write_manifest(cfg, ctx, files, hist.name, schemas)
    stats = {"files": manifest["files"], "bytes": manifest["bytes"],
             "reranker_rl_rows": rl.num_rows, "reranker_sft_rows": inputs["reranker_sft"].num_rows,
             "retriever_rows": st.num_rows, "retriever_rows_left_out_short": short,
             "retriever_examples_rows": ret.num_rows, "labels_rows": labels_t.num_rows, "qrels_rows": syn.num_rows,
             "labels_rows_excluded_injection": n_labels_in - labels_t.num_rows,
             "shards": sum(v["shards"] for v in view_info.values())}
    return StageResult({"export": out, "dataset_card": readme, "manifest": manifest["path"], "histogram": hist},
                       stats)


def _write_views(cfg, out: Path, views: dict, bconf: dict) -> tuple[list[dict], dict[str, dict]]:
    """Each view as Parquet shards in its folder -> (file entries, view info)."""
    from .export import parquet_rows, write_sharded
    extra = {"datasets_config": bconf, "template_version": TEMPLATE_VERSION}
    shard = dict(max_rows=cfg.datasets.shard_max_rows, max_bytes=cfg.datasets.shard_max_bytes)
    files: list[dict] = []
    view_info: dict[str, dict] = {}
    for name, (view, tdef) in views.items():
        paths = write_sharded(view, tdef, out / name, extra={**extra, "view": name}, **shard)
        view_info[name] = {"glob": f"{name}/train-*.parquet", "rows": view.num_rows, "shards": len(paths)}
        for p in paths:
            files.append({"path": p.relative_to(out).as_posix(), "schema": tdef.name, "version": tdef.version,
                          "rows": parquet_rows(p), "bytes": p.stat().st_size})
    return files, view_info


def grade_counts_of(labels_t: pa.Table) -> dict[int, int]:
    from .card import grade_counts
    return grade_counts(labels_t)


def _rl_grade_counts(rl: pa.Table) -> dict[int, int]:
    counts: dict[int, int] = {}
    for gg in rl.column("gold_grades").to_pylist():
        for g in gg:
            counts[int(g)] = counts.get(int(g), 0) + 1
    return dict(sorted(counts.items()))


def _card_text(cfg, inputs, labels_t, judg_t, files, view_info, counts, build_stats, bconf, lab_counts,
               schemas, histogram: str, views: dict) -> str:
    from .card import human_agreement, judge_agreement, judges_summary, prompt_lengths, render_card
    methods: dict[str, int] = {}
    for m in labels_t.column("method").to_pylist():
        methods[m] = methods.get(m, 0) + 1
    run_cfg = cfg.model_dump(mode="json")
    run_cfg["work_dir"] = "<work_dir>"
    dc = cfg.datasets
    return render_card(name=f"{cfg.name} ({cfg.data.collection})", files=files, views=view_info, counts=counts,
                       build_stats=build_stats, label_grades=lab_counts, judges=judges_summary(judg_t, labels_t),
                       agreement_rows=judge_agreement(judg_t), human=human_agreement(labels_t, inputs.get("qrels")),
                       methods=methods, config=bconf, run_config=run_cfg, schemas=schemas,
                       template_version=TEMPLATE_VERSION, histogram=histogram, seed=cfg.seed,
                       collection=cfg.data.collection, license=dc.card_license, language=dc.card_language,
                       columns={name: tdef for name, (_, tdef) in views.items()},
                       lengths=prompt_lengths(inputs["reranker_rl"]),
                       retriever_training=retriever_use(cfg, inputs["retriever_examples"]))


def _write_manifest(cfg, ctx: StageContext, files: list[dict], histogram: str, schemas: dict) -> dict:
    """manifest.json: every file with its size and sha256 (written atomically through the context)."""
    from .export import sha256_file
    out = ctx.out_dir
    entries = []
    for f in sorted(files, key=lambda f: f["path"]) + [
            {"path": "README.md", "schema": "card", "version": ""},
            {"path": histogram, "schema": "png", "version": ""}]:
        p = out / f["path"]
        entries.append({**f, "bytes": p.stat().st_size, "sha256": sha256_file(p)})
    path = ctx.write_text("manifest.json", json.dumps(
        {"name": cfg.name, "collection": cfg.data.collection, "template_version": TEMPLATE_VERSION,
         "schemas": schemas, "files": entries}, indent=2, sort_keys=True))
    return {"path": path, "files": len(entries), "bytes": sum(f["bytes"] for f in entries)}


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
