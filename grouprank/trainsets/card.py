"""The dataset card (README.md) of an export, its grade histogram, and judge statistics.

The card is deterministic for equal inputs (no dates, no absolute paths), like the Parquet files,
and shows no credential (the embedded run configuration goes through `grouprank.redact`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa

from grouprank.atomic import atomic_write, write_text_atomic


def grade_counts(labels: pa.Table) -> dict[int, int]:
    out: dict[int, int] = {}
    for g in labels.column("grade").to_pylist():
        out[int(g)] = out.get(int(g), 0) + 1
    return dict(sorted(out.items()))


def grade_histogram_png(path: Path, labels_counts: Mapping[int, int], rl_counts: Mapping[int, int] | None = None,
                        title: str = "Fused grades") -> Path:
    """Bar chart of label grades (and of the gold grades inside the RL groups), Agg backend,
    no timestamp/software metadata so the PNG is reproducible."""
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    grades = sorted(set(labels_counts) | set(rl_counts or {}))
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    width = 0.4 if rl_counts else 0.8
    xs = list(range(len(grades)))
    ax.bar([x - (width / 2 if rl_counts else 0) for x in xs], [labels_counts.get(g, 0) for g in grades],
           width=width, label="labels (all judged pairs)")
    if rl_counts:
        ax.bar([x + width / 2 for x in xs], [rl_counts.get(g, 0) for g in grades], width=width,
               label="documents in reranker RL groups")
    ax.set_xticks(xs, [str(g) for g in grades])
    ax.set_xlabel("grade")
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": None}))
    plt.close(fig)
    return Path(path)


def judges_summary(judgments: pa.Table | None, labels: pa.Table | None) -> list[dict]:
    """Per judge: kind, model, template, ok/failed rows, tokens (from JUDGMENTS); or, without
    judgments, the judge ids named in LABELS.judge_scores."""
    if judgments is not None and judgments.num_rows:
        cols = ["judge_id", "kind", "model", "template_version", "status", "prompt_tokens", "completion_tokens"]
        if "injection_flag" in judgments.column_names:
            cols.append("injection_flag")
        df = judgments.select(cols).to_pandas()
        out = []
        for jid, g in df.groupby("judge_id", sort=True):
            out.append({"judge_id": jid, "kind": g["kind"].iloc[0], "model": g["model"].iloc[0],
                        "template_version": g["template_version"].iloc[0],
                        "rows_ok": int((g["status"] == "ok").sum()), "rows_failed": int((g["status"] != "ok").sum()),
                        "prompt_tokens": int(g["prompt_tokens"].fillna(0).sum()),
                        "completion_tokens": int(g["completion_tokens"].fillna(0).sum()),
                        # pairs whose document carries text aimed at the judge (grouprank.judges.injection)
                        "injection_flagged": int(g["injection_flag"].fillna(False).astype(bool).sum())
                        if "injection_flag" in g else None})
        return out
    if labels is None:
        return []
    ids: dict[str, int] = {}
    for s in labels.column("judge_scores").to_pylist():
        try:
            for k, v in json.loads(s or "{}").items():
                if v is not None:
                    ids[k] = ids.get(k, 0) + 1
        except json.JSONDecodeError:
            continue
    return [{"judge_id": k, "kind": "?", "model": "?", "template_version": "?", "rows_ok": v}
            for k, v in sorted(ids.items())]


def judge_agreement(judgments: pa.Table | None) -> list[dict]:
    """Pairwise agreement between judges: mean per-query Spearman rho of their values over the
    documents both judged (listwise ranks negated so higher = better); queries with < 3 common
    documents or a constant judge are skipped."""
    if judgments is None or judgments.num_rows == 0:
        return []
    from scipy.stats import spearmanr

    from grouprank.judges.fusion import RANK_KINDS, judge_values
    vals = judge_values(judgments).dropna(subset=["value"])
    if vals.empty:
        return []
    vals = vals.copy()
    vals.loc[vals["kind"].isin(RANK_KINDS), "value"] *= -1
    judges = sorted(vals["judge_id"].unique())
    wide = vals.pivot_table(index=["query_id", "doc_id"], columns="judge_id", values="value", aggfunc="first")
    out = []
    for i, a in enumerate(judges):
        for b in judges[i + 1:]:
            rhos = []
            for _, block in wide[[a, b]].dropna().groupby(level=0, sort=True):
                if len(block) < 3 or block[a].nunique() < 2 or block[b].nunique() < 2:
                    continue
                rhos.append(float(spearmanr(block[a], block[b]).statistic))
            out.append({"a": a, "b": b, "queries": len(rhos),
                        "mean_spearman": round(sum(rhos) / len(rhos), 4) if rhos else None})
    return out


def human_agreement(labels: pa.Table, qrels: pa.Table | None) -> dict | None:
    """Fused grades vs human qrels (weighted kappa, Spearman, Kendall) on the labelled pairs of the
    queries the qrels judge. A pooled document the qrels do not list for such a query counts as
    human grade 0 (the TREC convention; without it, positive-only qrels such as SciFact's would leave
    a single human grade and no measure): `n_unlisted_as_0` says how many."""
    if qrels is None or qrels.num_rows == 0:
        return None
    human = {(str(q), str(d)): int(g) for q, d, g in zip(qrels.column("query_id").to_pylist(),
                                                         qrels.column("doc_id").to_pylist(),
                                                         qrels.column("grade").to_pylist())}
    judged = {q for q, _ in human}
    a, b = [], []
    unlisted = 0
    for q, d, g in zip(labels.column("query_id").to_pylist(), labels.column("doc_id").to_pylist(),
                       labels.column("grade").to_pylist()):
        if str(q) not in judged:
            continue
        h = human.get((str(q), str(d)))
        if h is None:
            h, unlisted = 0, unlisted + 1
        a.append(h)
        b.append(int(g))
    queries = {str(q) for q in labels.column("query_id").to_pylist()} & judged
    out = {"n": len(a), "n_unlisted_as_0": unlisted, "queries": len(queries)}
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return out
    from grouprank.evaluation.agreement import agreement
    r = agreement(a, b, a_name="human", b_name="fused")
    return {**out, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
                      if k not in ("confusion", "n")}}


def _table(rows: list[dict], cols: list[str]) -> str:
    if not rows:
        return "_none_\n"
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = ("" if r.get(c) is None else str(r.get(c)).replace("|", "\\|").replace("\n", " ") for c in cols)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# the licence of each built-in collection's text (its SOURCE.md beside the data), as a Hub licence id;
# a collection of one's own: `datasets.card_license`, else "unknown"
COLLECTION_LICENSES = {"scifact": "cc-by-nc-2.0", "trec_dl19_passage": "other", "cranfield": "unknown",
                       "cisi": "unknown", "npl": "unknown"}
LICENSE_NOTES = {"trec_dl19_passage": "passages from MS MARCO (Microsoft; terms allow non-commercial research use), "
                                      "queries and qrels from the TREC 2019 Deep Learning Track (NIST)",
                 "scifact": "SciFact, released by AllenAI under CC BY-NC 2.0 (non-commercial)"}
LICENSE_NAMES = {"trec_dl19_passage": "ms-marco-and-trec-dl-2019-terms"}  # for `license: other`
TASK_CATEGORIES = ["text-ranking", "text-retrieval"]
DEFAULT_VIEW = "reranker_rl"


def size_category(n: int) -> str:
    """The Hub's `size_categories` value for n rows."""
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                        (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")):
        if n < bound:
            return name
    return "1B<n<10B"


def card_metadata(*, pretty_name: str, license: str, language: list[str], views: Mapping[str, dict],
                  default_view: str = DEFAULT_VIEW, license_name: str | None = None) -> str:
    """The card's YAML block, made by `huggingface_hub.DatasetCardData`: licence, language, task
    categories, size category (of the largest view), pretty name, and one config per view with
    `default_view` the default (so `datasets.load_dataset(export_dir)` needs no config name)."""
    from huggingface_hub import DatasetCardData
    order = [default_view] + [v for v in views if v != default_view] if default_view in views else list(views)
    configs = []
    for v in order:
        c: dict[str, Any] = {"config_name": v, "data_files": [{"split": "train", "path": views[v]["glob"]}]}
        if v == default_view:
            c["default"] = True
        configs.append(c)
    largest = max((int(v.get("rows", 0)) for v in views.values()), default=0)
    extra = {"license_name": license_name} if license == "other" and license_name else {}
    data = DatasetCardData(license=license, language=list(language), task_categories=list(TASK_CATEGORIES),
                           size_categories=[size_category(largest)], pretty_name=pretty_name,
                           tags=["grouprank", "reranking", "retrieval", "synthetic"], configs=configs, **extra)
    return "---\n" + data.to_yaml() + "\n---\n"


def columns_markdown(view: str, table_def) -> str:
    """One row per column of a view: name, Arrow type, description (the schema's own field docs,
    data_schemas/: the card cannot drift from what is written)."""
    rows = [{"column": f"`{f.name}`", "type": f"`{f.type}`" + (" (nullable)" if f.nullable else ""),
             "description": f.doc} for f in table_def.fields]
    return f"### `{view}/` ({table_def.name} v{table_def.version})\n\n{table_def.doc}\n\n" + \
        _table(rows, ["column", "type", "description"])


def prompt_lengths(rl: pa.Table) -> dict[str, Any]:
    """Length of each RL prompt (all its messages): characters and whitespace-separated words, as
    count / min / median / p90 / max (tokens depend on the policy's tokenizer)."""
    import statistics
    chars, words = [], []
    for msgs in rl.column("prompt").to_pylist() if rl.num_rows else []:
        text = "\n".join(str(m.get("content") or "") for m in msgs)
        chars.append(len(text))
        words.append(len(text.split()))

    def dist(xs: list[int]) -> dict[str, Any]:
        if not xs:
            return {}
        xs = sorted(xs)
        return {"min": xs[0], "median": int(statistics.median(xs)), "p90": xs[min(len(xs) - 1, int(0.9 * len(xs)))],
                "max": xs[-1]}
    return {"prompts": len(chars), "characters": dist(chars), "words": dist(words)}


def human_markdown(human: dict | None) -> str:
    if not human:
        return "Agreement of the fused grades with human qrels: not known (no human qrels given).\n"
    rows = [{"measure": k, "value": human[k]} for k in ("queries", "n", "n_unlisted_as_0", "kappa_weighted",
                                                       "spearman", "kendall") if k in human]
    rows += [{"measure": k, "value": v} for k, v in sorted(human.items())
             if k not in {r["measure"] for r in rows} and isinstance(v, (int, float, str))]
    n, unl = human.get("n", 0), human.get("n_unlisted_as_0", 0)
    return ("Agreement of the fused grades with human qrels, on the labelled pairs of the queries the qrels judge:\n\n"
            + _table(rows, ["measure", "value"])
            + f"\n`n_unlisted_as_0`: {unl:,} of the {n:,} pairs are pooled documents the qrels do not list for "
              "their query, counted as human grade 0 (the TREC convention; positive-only qrels such as SciFact's "
              "would otherwise leave a single human grade and no measure). Only "
              f"{max(0, n - unl):,} pairs carry a human label.\n")


def render_card(*, name: str, files: list[dict], views: Mapping[str, dict], counts: Mapping[str, Any],
                build_stats: Mapping[str, Any], label_grades: Mapping[int, int], judges: list[dict],
                agreement_rows: list[dict], human: dict | None, methods: Mapping[str, int],
                config: Mapping[str, Any], run_config: Mapping[str, Any], schemas: Mapping[str, int],
                template_version: str, histogram: str, seed: int | None = None,
                collection: str = "", license: str | None = None, language: list[str] | None = None,
                columns: Mapping[str, Any] | None = None, lengths: Mapping[str, Any] | None = None,
                retriever_training: Mapping[str, Any] | None = None) -> str:
    """`config`: the datasets section; `run_config`: the whole run configuration, shown through
    `grouprank.redact.redact` (credential-like keys as ***, URLs without user-info or query; the
    configuration sections already refuse or clean credentials when they are loaded). `columns`: view
    -> its `data_schemas` Table (every column described from it); `lengths`: `prompt_lengths` of the
    RL view; `retriever_training`: how the run's retriever training uses the retriever view."""
    lic = license or COLLECTION_LICENSES.get(collection, "unknown")
    header = card_metadata(pretty_name=f"GroupRank synthesized relevance data: {name}", license=lic,
                           language=language or ["en"], views=views,
                           license_name=LICENSE_NAMES.get(collection)).splitlines() + [""]
    lines = (header + _intro_section(name, collection, lic, files)
             + [columns_markdown(view, tdef) for view, tdef in (columns or {}).items()]
             + _grades_section(counts, label_grades, methods, histogram)
             + _reranker_section(config, build_stats, seed, template_version, lengths)
             + _retriever_section(config, build_stats, dict(retriever_training or {}))
             + _judges_section(judges, build_stats, agreement_rows, human)
             + _configuration_section(schemas, run_config))
    return "\n".join(lines)


def _intro_section(name: str, collection: str, lic: str, files: list[dict]) -> list[str]:
    """Title, provenance, the file table, how to load a view, and the Columns heading."""
    lic_note = LICENSE_NOTES.get(collection, "no licence stated by the source" if lic == "unknown" else "")
    return [
        f"# {name}: GroupRank synthesized training data",
        "",
        "Graded relevance labels fused from LLM (or local) judges, turned into groupwise reranker examples "
        "(GRPO and SFT) and contrastive retriever examples, with the synthesized qrels as BEIR and TREC files. "
        "Built by `grouprank build-datasets` and `grouprank export`, following GroupRank "
        "([arXiv 2511.11653](https://arxiv.org/abs/2511.11653)). The text comes from the source "
        f"collection `{collection or '?'}` and keeps its licence (`{lic}`{': ' + lic_note if lic_note else ''}).",
        "",
        "## Files",
        "",
        _table(files, ["path", "schema", "version", "rows", "bytes"]),
        "(`rows`: data rows; the header line of `beir/qrels/train.tsv` is not counted.)",
        "",
        "Load a view:",
        "",
        "```python",
        "import datasets, pandas as pd, duckdb",
        f"ds = datasets.load_dataset(\"path/to/this/folder\", split=\"train\")  # the default config: {DEFAULT_VIEW}",
        "ret = datasets.load_dataset(\"path/to/this/folder\", \"retriever\", split=\"train\")",
        "df = pd.read_parquet(\"retriever/\")",
        "duckdb.sql(\"SELECT grade, count(*) FROM 'labels/*.parquet' GROUP BY grade\")",
        "```",
        "",
        "* `reranker_rl` (default config): TRL `GRPOTrainer` input as is: `prompt` (chat messages: GroupRank "
        "system prompt and the query with documents [1]..[c]), `gold_grades` and `gold_scores` (fused score) in "
        "prompt order, for `grouprank.reranker.reward.groupwise_reward`.",
        "* `reranker_sft`: `messages` = prompt + assistant target `<reason>…</reason><answer>{…}</answer>`.",
        "* `retriever`: sentence-transformers input as is (`anchor`, `positive`, `negative_1…n`) for "
        "MultipleNegativesRankingLoss; `retriever_examples` keeps the ids and grades.",
        "* `labels`, `qrels`, `beir/`, `qrels.train.trec`: the synthesized graded qrels.",
        "",
        "## Columns",
        "",
        "Every column of every view, from the schema definitions the files are written and checked with "
        "(`data_schemas/tables.py`; each Parquet file also carries its schema name and version).",
        "",
    ]


def _grades_section(counts: Mapping[str, Any], label_grades: Mapping[int, int], methods: Mapping[str, int],
                    histogram: str) -> list[str]:
    return [
        "## Counts",
        "",
        _table([{"item": k, "value": v} for k, v in counts.items()], ["item", "value"]),
        "## Grades",
        "",
        f"![grade histogram]({histogram})",
        "",
        _table([{"grade": g, "labels": c} for g, c in label_grades.items()], ["grade", "labels"]),
        f"Label fusion methods: {', '.join(f'{k} ({v})' for k, v in sorted(methods.items())) or 'n/a'}.",
        "",
    ]


def _reranker_section(config: Mapping[str, Any], build_stats: Mapping[str, Any], seed: int | None,
                      template_version: str, lengths: Mapping[str, Any] | None) -> list[str]:
    """Multi-scale sampling, group sizes, prompt lengths and the SFT targets' sources."""
    run_seed = config.get("seed") if config.get("seed") is not None else seed
    sft_src = {k[len("sft_target_"):]: v for k, v in build_stats.items() if k.startswith("sft_target_")}
    lines = [
        "## Reranker examples",
        "",
        "Multi-scale sampling (GroupRank; `grouprank/trainsets/sampling.py`): per query, groups of "
        f"{config.get('group_min')}–{config.get('group_max')} documents "
        f"(weights {config.get('group_size_weights') or 'uniform'}), {config.get('top_share')} of each group "
        f"from the top {config.get('top_window')} fused ranks and the rest from the remaining ranking, "
        f"mixed relevant/non-relevant when the query has both ({config.get('require_mixed')}), shuffled; seed "
        f"{run_seed if run_seed is not None else 'not recorded'}"
        f"{' (the run seed)' if config.get('seed') is None and seed is not None else ''}, seeded per query. "
        f"Prompt template `{template_version}`.",
        "",
        f"Group sizes (RL): `{build_stats.get('group_size_counts', '{}')}`; gold grades inside RL groups: "
        f"`{build_stats.get('rl_gold_grade_counts', '{}')}`.",
        "",
    ]
    if lengths:
        ch, wd = lengths.get("characters") or {}, lengths.get("words") or {}
        lines += [
            f"Prompt length of the {lengths.get('prompts', 0):,} RL prompts (all messages):",
            "",
            _table([{"unit": "characters", **ch}, {"unit": "words (whitespace)", **wd}],
                   ["unit", "min", "median", "p90", "max"]),
            "Tokens depend on the policy's tokenizer (`len(tokenizer.apply_chat_template(row[\"prompt\"]))`); "
            "`grouprank train-reranker` reports them in its policy's tokens (`rl_prompt_tokens_median` / `_p90` / "
            "`_max`, and `rl_prompts_over_context` against the model's window). "
            "TRL's `GRPOConfig` has no prompt length cap: a prompt longer than the policy's context window is "
            "not cut by the trainer; cut documents when building (`prompts.max_doc_chars`) or when training "
            "(`reranker.train_doc_chars`), or filter rows by length.",
            "",
        ]
    return lines + [
        "SFT targets (`target_source`): " + (", ".join(f"{k}: {v}" for k, v in sorted(sft_src.items())) or "none") + ".",
        "`teacher` = a groupwise judge's own rationale and scores; `teacher_scores` = the judge's scores with "
        "a templated rationale (its prompt order was not recorded); `fused_labels` = scores "
        "round(10·grade/grade_scale) with a templated rationale (no groupwise judgment).",
        "",
    ]


def _retriever_section(config: Mapping[str, Any], build_stats: Mapping[str, Any], rt: Mapping[str, Any]) -> list[str]:
    """Positives, hard negatives, the guard's removals, and how the run's retriever training reads them."""
    guard = {k[len("guard_"):]: v for k, v in build_stats.items() if k.startswith("guard_")}
    order = ("retrieval order (CANDIDATES.rank, the fused BM25 + dense ranking)"
             if build_stats.get("negative_order") == "retrieval" else "fused-label order (no candidates table)")
    lines = [
        "## Retriever examples and the false-negative guard",
        "",
        f"Positives: grade ≥ {config.get('positive_grade')}. Hard negatives: grade ≤ "
        f"{config.get('negative_max_grade')}, in {order}, "
        f"{config.get('negatives_per_example')} per example. A negative is removed when it is unlabelled, graded "
        f"≥ the positive grade, graded above the negative maximum, has the text of a positive, or its per-query "
        f"min-max normalised fused score is within {config.get('false_negative_margin')} of the positive's.",
        "",
        _table([{"rule": k, "removed": v} for k, v in sorted(guard.items())], ["rule", "removed"]),
        "(`fused_margin_pairs` counts (positive, candidate) pairs; the other rules count candidate documents.)",
        "",
    ]
    if not rt:
        return lines
    return lines + [
        "How this run's retriever training uses `retriever/`: "
        + (f"at most {rt['max_positives_per_query']} positive(s) per query (`retriever.max_positives_per_query`), "
           if rt.get("max_positives_per_query") else "every row, ")
        + f"{rt.get('n_negatives')} hard negative(s) per row, batches of {rt.get('batch_size')} drawn by "
        f"sentence-transformers' `{rt.get('batch_sampler')}` batch sampler (no two rows with the same anchor or "
        "text in a batch, so a repeated query never serves as its own in-batch negative). "
        + (f"The cap selects {rt['selected_rows']:,} of the {rt['rows']:,} rows of `retriever_examples/` "
           "(highest positive grade first, then the order of the file; "
           "`grouprank.retriever_training.data.select_examples`); the training then leaves out the rows of "
           "its own evaluation queries (its `summary.json` counts them)." if rt.get("selected_rows") is not None
           else ""),
        "",
    ]


def _judges_section(judges: list[dict], build_stats: Mapping[str, Any], agreement_rows: list[dict],
                    human: dict | None) -> list[str]:
    excluded = build_stats.get("injection_flagged_excluded")
    return [
        "## Judges",
        "",
        _table(judges, ["judge_id", "kind", "model", "template_version", "rows_ok", "rows_failed",
                        "prompt_tokens", "completion_tokens", "injection_flagged"]),
        "`injection_flagged`: judged pairs whose document carries text aimed at the judge (instructions, "
        "chat-template tokens, fake answer tags; `grouprank.judges.injection`); control tokens are "
        "neutralised in every prompt. "
        + (f"{excluded} flagged pairs were left out of the training views "
           "(`datasets.exclude_injection_flagged`)." if excluded is not None
           else "Flagged pairs were kept in the training views (`datasets.exclude_injection_flagged: false`)."),
        "",
        "Agreement between judges (mean per-query Spearman over documents both judged):",
        "",
        _table(agreement_rows, ["a", "b", "queries", "mean_spearman"]) if agreement_rows
        else "_not known (fewer than two judges or no judgments table)_\n",
        human_markdown(human),
    ]


def _configuration_section(schemas: Mapping[str, int], run_config: Mapping[str, Any]) -> list[str]:
    from grouprank.redact import redact
    return [
        "## Configuration and schemas",
        "",
        _table([{"table": k, "version": v} for k, v in sorted(schemas.items())], ["table", "version"]),
        "Run configuration (`work_dir` elided):",
        "",
        "```json",
        json.dumps(redact(dict(run_config)), indent=2, sort_keys=True),
        "```",
        "",
    ]


def write_card(path: Path, text: str) -> Path:
    return write_text_atomic(path, text)
