"""The dataset card (README.md) of an export, its grade histogram, and judge statistics.

The card is deterministic for equal inputs (no dates, no absolute paths), like the Parquet files,
and shows no credential (the embedded run configuration goes through `grouprank.redact`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa

from .export import atomic_write, write_text_atomic


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
        lines.append("| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def render_card(*, name: str, files: list[dict], views: Mapping[str, dict], counts: Mapping[str, Any],
                build_stats: Mapping[str, Any], label_grades: Mapping[int, int], judges: list[dict],
                agreement_rows: list[dict], human: dict | None, methods: Mapping[str, int],
                config: Mapping[str, Any], run_config: Mapping[str, Any], schemas: Mapping[str, int],
                template_version: str, histogram: str) -> str:
    """`config`: the datasets section; `run_config`: the whole run configuration, shown through
    `grouprank.redact.redact` (credential-like keys as ***, URLs without user-info or query; the
    configuration sections already refuse or clean credentials when they are loaded)."""
    from grouprank.redact import redact
    cfg_json = json.dumps(redact(dict(run_config)), indent=2, sort_keys=True)
    header = ["---", "configs:"]
    for view, info in views.items():
        header += [f"- config_name: {view}", "  data_files:", "  - split: train", f"    path: {info['glob']}"]
    header += ["tags:", "- grouprank", "- reranking", "- retrieval", "- synthetic", "---", ""]
    sft_src = {k[len("sft_target_"):]: v for k, v in build_stats.items() if k.startswith("sft_target_")}
    guard = {k[len("guard_"):]: v for k, v in build_stats.items() if k.startswith("guard_")}
    lines = header + [
        f"# {name}: GroupRank synthesized training data",
        "",
        "Graded relevance labels fused from LLM (or local) judges, turned into groupwise reranker examples "
        "(GRPO and SFT) and contrastive retriever examples, with the synthesized qrels as BEIR and TREC files. "
        "Built by `grouprank build-datasets` and `grouprank export`. The text comes from the source "
        "collection and keeps its licence.",
        "",
        "## Files",
        "",
        _table(files, ["path", "schema", "version", "rows", "bytes"]),
        "Load a view:",
        "",
        "```python",
        "import datasets, pandas as pd, duckdb",
        f"ds = datasets.load_dataset(\"parquet\", data_files=\"{views.get('reranker_rl', {}).get('glob', 'reranker_rl/*.parquet')}\", split=\"train\")",
        "df = pd.read_parquet(\"retriever/\")",
        "duckdb.sql(\"SELECT grade, count(*) FROM 'labels/*.parquet' GROUP BY grade\")",
        "```",
        "",
        "* `reranker_rl`: TRL `GRPOTrainer` input as is: `prompt` (chat messages: GroupRank system prompt and "
        "the query with documents [1]..[c]), `gold_grades` and `gold_scores` (fused score) in prompt order, for "
        "`grouprank.reranker.reward.groupwise_reward`.",
        "* `reranker_sft`: `messages` = prompt + assistant target `<reason>…</reason><answer>{…}</answer>`.",
        "* `retriever`: sentence-transformers input as is (`anchor`, `positive`, `negative_1…n`) for "
        "MultipleNegativesRankingLoss; `retriever_examples` keeps the ids and grades.",
        "* `labels`, `qrels`, `beir/`, `qrels.train.trec`: the synthesized graded qrels.",
        "",
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
        "## Reranker examples",
        "",
        "Multi-scale sampling (DESIGN §2): per query, groups of "
        f"{config.get('group_min')}–{config.get('group_max')} documents "
        f"(weights {config.get('group_size_weights') or 'uniform'}), {config.get('top_share')} of each group "
        f"from the top {config.get('top_window')} fused ranks and the rest from the remaining ranking, "
        f"mixed relevant/non-relevant when the query has both ({config.get('require_mixed')}), shuffled; seed "
        f"{config.get('seed')}, seeded per query. Prompt template `{template_version}`.",
        "",
        f"Group sizes (RL): `{build_stats.get('group_size_counts', '{}')}`; gold grades inside RL groups: "
        f"`{build_stats.get('rl_gold_grade_counts', '{}')}`.",
        "",
        "SFT targets (`target_source`): " + (", ".join(f"{k}: {v}" for k, v in sorted(sft_src.items())) or "none") + ".",
        "`teacher` = a groupwise judge's own rationale and scores; `teacher_scores` = the judge's scores with "
        "a templated rationale (its prompt order was not recorded); `fused_labels` = scores "
        "round(10·grade/grade_scale) with a templated rationale (no groupwise judgment).",
        "",
        "## Retriever examples and the false-negative guard",
        "",
        f"Positives: grade ≥ {config.get('positive_grade')}. Hard negatives: grade ≤ "
        f"{config.get('negative_max_grade')}, in "
        f"{'retrieval order (CANDIDATES.rank, the fused BM25 + dense ranking)' if build_stats.get('negative_order') == 'retrieval' else 'fused-label order (no candidates table)'}, "
        f"{config.get('negatives_per_example')} per example. A negative is removed when it is unlabelled, graded "
        f"≥ the positive grade, graded above the negative maximum, has the text of a positive, or its per-query "
        f"min-max normalised fused score is within {config.get('false_negative_margin')} of the positive's.",
        "",
        _table([{"rule": k, "removed": v} for k, v in sorted(guard.items())], ["rule", "removed"]),
        "(`fused_margin_pairs` counts (positive, candidate) pairs; the other rules count candidate documents.)",
        "",
        "## Judges",
        "",
        _table(judges, ["judge_id", "kind", "model", "template_version", "rows_ok", "rows_failed",
                        "prompt_tokens", "completion_tokens", "injection_flagged"]),
        "`injection_flagged`: judged pairs whose document carries text aimed at the judge (instructions, "
        "chat-template tokens, fake answer tags; `grouprank.judges.injection`); control tokens are "
        "neutralised in every prompt. "
        + (f"{build_stats.get('injection_flagged_excluded')} flagged pairs were left out of the training views "
           "(`datasets.exclude_injection_flagged`)." if build_stats.get("injection_flagged_excluded") is not None
           else "Flagged pairs were kept in the training views (`datasets.exclude_injection_flagged: false`)."),
        "",
        "Agreement between judges (mean per-query Spearman over documents both judged):",
        "",
        _table(agreement_rows, ["a", "b", "queries", "mean_spearman"]) if agreement_rows else "_not known (fewer than two judges or no judgments table)_\n",
        "Agreement of the fused grades with human qrels: "
        + (json.dumps(human, sort_keys=True) if human else "not known (no human qrels given)") + ".",
        "",
        "## Configuration and schemas",
        "",
        _table([{"table": k, "version": v} for k, v in sorted(schemas.items())], ["table", "version"]),
        "Run configuration (`work_dir` elided):",
        "",
        "```json",
        cfg_json,
        "```",
        "",
    ]
    return "\n".join(lines)


def write_card(path: Path, text: str) -> Path:
    return write_text_atomic(path, text)
