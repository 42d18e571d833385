"""Monitoring artifacts of a run (Prefect UI: the flow run's Artifacts tab, and the Artifacts page).

Published at the end of every flow run (also when every stage came from the cache):

| key (suffix: run name)          | type     | what                                               |
|---------------------------------|----------|----------------------------------------------------|
| grouprank-summary-<name>        | markdown | run summary: stage table, where the exports are    |
| grouprank-stage-counts-<name>   | table    | per stage: state (ran / cached), seconds, numbers  |
| grouprank-grade-distribution-.. | table    | fused label grades: count, share                   |
| grouprank-judge-agreement-..    | table    | judge vs judge (Spearman) and fused vs human qrels |
| grouprank-llm-usage-<name>      | table    | LLM calls, cached calls, tokens, cost              |
| grouprank-grade-histogram-..    | markdown | the export's grade histogram PNG (data: URI)       |
| grouprank-<stage>-progress-<n.> | progress | one per stage declaring progress parts (judge,     |
|                                 |          | retrieve, training, ...): created at the start of  |
|                                 |          | the run, updated while the stage runs              |

The Prefect UI shows an image artifact only from a URL, and the PNG is a local file: the histogram is
embedded in a markdown artifact as a `data:image/png;base64,...` URI (the UI's markdown renderer
allows data: image sources), with the file's path under it.

The row builders are plain functions of stage results and tables (no Prefect), tested directly.
"""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

USAGE_WORDS = ("call", "token", "cost", "request", "cached", "retries", "failed")


def slug(name: str) -> str:
    s = re.sub(r"[^a-z0-9-]+", "-", str(name).lower()).strip("-")
    return s or "run"


def artifact_key(kind: str, run_name: str) -> str:
    return f"grouprank-{kind}-{slug(run_name)}"[:200]


def progress_kind(stage: str) -> str:
    """The artifact kind of a stage's progress artifact: `judge-progress`, `train-reranker-progress`."""
    return f"{slug(stage)}-progress"


def _num(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.4g}"
    return str(v)


def numbers(stats: dict, limit: int = 8) -> str:
    """The first numeric stats as `k=v` (for table cells)."""
    out = []
    for k, v in (stats or {}).items():
        if k in ("wall_s", "model_lock_wait_s", "work_s") or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out.append(f"{k}={_num(v)}")
        if len(out) >= limit:
            break
    return ", ".join(out)


def stage_rows(records: list[dict]) -> list[dict]:
    """records: [{"stage", "state", "seconds", "stats"}] -> table rows with identical columns."""
    return [{"stage": r["stage"], "state": r["state"],
             "seconds": round(float(r.get("seconds") or 0.0), 2),
             # of `seconds`, the time spent waiting for another stage's model building (grouprank.model_lock)
             "model_lock_wait_s": round(float(r["model_lock_wait_s"]), 2) if r.get("model_lock_wait_s") is not None
             else None,
             "numbers": numbers(r.get("stats") or {})} for r in records]


def stage_number_rows(records: list[dict]) -> list[dict]:
    """Every number of every stage, one row each (stage, number, value): nothing cut off, unlike the
    stage-counts table's `numbers` cell."""
    out = []
    for r in records:
        for k, v in (r.get("stats") or {}).items():
            if not isinstance(v, (int, float, str)):
                continue
            out.append({"stage": r["stage"], "number": k, "value": _num(v)})
    return out


def evaluation_rows(eval_report: str | None) -> list[dict]:
    """The evaluate stage's systems x measures (eval_report.json), one row per system: the first
    stage, the fine-tuned retriever and the rerankers side by side, with the queries each was scored on."""
    if not eval_report or not Path(eval_report).exists():
        return []
    rep = json.loads(Path(eval_report).read_text())
    measures = list(rep.get("measures") or [])
    sig = rep.get("significance") or {}
    base = sig.get("baseline")
    rows = []
    for system, vals in (rep.get("systems") or {}).items():
        row = {"system": system}
        for m in measures:
            v = vals.get(m)
            row[m] = round(float(v), 4) if isinstance(v, (int, float)) else None
        row["split"] = rep.get("split")
        # the queries this system was scored on (a reranker: the subset it reranked)
        row["queries"] = (rep.get("system_queries") or {}).get(system, rep.get("queries"))
        if sig:
            row["baseline"] = "(baseline)" if system == base else base
            cmp = (sig.get("systems") or {}).get(system) or {}
            for m in measures:
                c = cmp.get(m) or {}
                row[f"{m} Δ"] = c.get("mean_diff")
                row[f"{m} 95% CI"] = (f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]" if c.get("ci95") else None)
                row[f"{m} p (t-test)"] = c.get("p_ttest")
                row[f"{m} p (Wilcoxon)"] = c.get("p_wilcoxon")
                row[f"{m} pairs"] = c.get("n")
        rows.append(row)
    return rows


def grade_rows(labels_path: str | None) -> list[dict]:
    if not labels_path or not Path(labels_path).exists():
        return []
    import pyarrow.parquet as pq
    from grouprank.trainsets.card import grade_counts
    counts = grade_counts(pq.read_table(labels_path, columns=["grade"]))
    total = sum(counts.values()) or 1
    return [{"grade": int(g), "count": int(n), "share": round(n / total, 4)} for g, n in counts.items()]


def agreement_rows(judgments_path: str | None, labels_path: str | None, qrels_path: str | None) -> list[dict]:
    """Judge-vs-judge mean per-query Spearman, and fused grades vs human qrels where they overlap."""
    import pyarrow.parquet as pq
    from grouprank.trainsets.card import human_agreement, judge_agreement
    rows: list[dict] = []
    if judgments_path and Path(judgments_path).exists():
        for r in judge_agreement(pq.read_table(judgments_path)):
            note = ("mean per-query Spearman over the documents both judges judged, on queries with >= 3 such "
                    "documents that neither judge scored all alike; Kendall and weighted kappa: human row only")
            if r.get("mean_spearman") is None:
                note = ("blank: no query where both judges judged >= 3 documents with varying values (e.g. an "
                        "active-labelling judge asked about a few pairs per query only)")
            rows.append({"a": r["a"], "b": r["b"], "pairs_or_queries": r.get("queries"),
                         "spearman": r.get("mean_spearman"), "kendall": None, "kappa_weighted": None,
                         "unlisted_as_grade_0": None, "note": note})
    if labels_path and qrels_path and Path(labels_path).exists() and Path(qrels_path).exists():
        h = human_agreement(pq.read_table(labels_path), pq.read_table(qrels_path))
        if h and h.get("n"):
            n, unl = int(h["n"]), int(h.get("n_unlisted_as_0") or 0)
            rows.append({"a": "human qrels", "b": "fused labels", "pairs_or_queries": n,
                         "spearman": h.get("spearman"), "kendall": h.get("kendall"),
                         "kappa_weighted": h.get("kappa_weighted"), "unlisted_as_grade_0": unl,
                         "note": f"labelled pairs of the {h.get('queries')} queries the qrels judge; {unl:,} of the "
                                 f"{n:,} are pooled documents the qrels do not list, counted as human grade 0 "
                                 f"(TREC convention); {n - unl:,} carry a human label"})
    return rows


def usage_rows(results: dict[str, dict], judgments_path: str | None = None) -> list[dict]:
    """LLM calls / tokens / cost: every stage stat whose name says so, plus per-judge token sums."""
    rows: list[dict] = []
    for stage, res in results.items():
        for k, v in (res.get("stats") or {}).items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if any(w in k.lower() for w in USAGE_WORDS):
                rows.append({"scope": stage, "metric": k, "value": v})
    if judgments_path and Path(judgments_path).exists():
        import pyarrow.parquet as pq
        from grouprank.trainsets.card import judges_summary
        try:
            summ = judges_summary(pq.read_table(judgments_path), None)
        except Exception:  # a judgments table without the token columns: stage stats suffice
            summ = []
        for j in summ:
            for m in ("rows_ok", "rows_failed", "prompt_tokens", "completion_tokens"):
                if m in j:
                    rows.append({"scope": f"judge {j['judge_id']} ({j.get('kind', '?')})", "metric": m,
                                 "value": j[m]})
    return rows


def histogram_markdown(png: str | Path, max_bytes: int = 2_000_000) -> str | None:
    p = Path(png)
    if not p.is_file() or p.stat().st_size > max_bytes:
        return None
    b64 = base64.b64encode(p.read_bytes()).decode()
    return (f"### Grade histogram\n\n![grade histogram](data:image/png;base64,{b64})\n\n"
            f"File: `{p}`\n")


def _md_table(rows: list[dict]) -> str:
    if not rows:
        return "_none_\n"
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_num(r.get(c, "")) if r.get(c) is not None else "" for c in cols) + " |")
    return "\n".join(out) + "\n"


def summary_markdown(summary: dict, stage_table: list[dict]) -> str:
    ran = sum(1 for r in stage_table if r["state"] == "ran")
    cached = sum(1 for r in stage_table if r["state"] == "cached")
    lines = [
        f"# GroupRank run `{summary.get('run')}`",
        "",
        "| item | value |",
        "|---|---|",
        f"| flow | {summary.get('flow')} |",
        f"| collection | {summary.get('collection')} |",
        f"| work dir | `{summary.get('work_dir')}` |",
        f"| stages ran / cached | {ran} / {cached} |",
        f"| wall time | {summary.get('wall_s')} s |",
    ]
    if summary.get("exports"):
        lines.append(f"| exports | `{summary['exports']}` |")
    if summary.get("summary_path"):
        lines.append(f"| run summary | `{summary['summary_path']}` |")
    if summary.get("skipped"):
        lines.append(f"| not available in this checkout | {', '.join(summary['skipped'])} |")
    lines += ["", "## Stages", "", _md_table(stage_table)]
    return "\n".join(lines)


def publish(summary: dict, stage_table: list[dict], results: dict[str, dict], qrels_path: str | None) -> dict[str, str]:
    """Create the run's artifacts (call inside a flow run). Returns {key: artifact kind}."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    name = summary.get("run", "run")
    out: dict[str, str] = {}

    def md(kind: str, text: str, desc: str) -> None:
        k = artifact_key(kind, name)
        create_markdown_artifact(markdown=text, key=k, description=desc)
        out[k] = "markdown"

    def table(kind: str, rows: list[dict], desc: str) -> None:
        if not rows:
            return
        k = artifact_key(kind, name)
        create_table_artifact(table=rows, key=k, description=desc)
        out[k] = "table"

    md("summary", summary_markdown(summary, stage_table), "GroupRank run summary")
    table("stage-counts", stage_table, "Per stage: ran or cached, seconds, numbers")
    outs = lambda s, o: (results.get(s) or {}).get("outputs", {}).get(o)  # noqa: E731
    labels = outs("fuse", "labels")
    judgments = outs("judge", "judgments")
    table("grade-distribution", grade_rows(labels), "Fused label grades")
    try:
        table("judge-agreement", agreement_rows(judgments, labels, qrels_path),
              "Judge vs judge (mean per-query Spearman) and fused labels vs human qrels")
    except Exception as e:  # monitoring must not fail the run
        md("judge-agreement", f"agreement could not be computed: `{e}`", "judge agreement (error)")
    table("llm-usage", usage_rows(results, judgments), "LLM calls, tokens and cost")
    table("stage-numbers", stage_number_rows([{"stage": k, "stats": v.get("stats")} for k, v in
                                             (summary.get("stages") or {}).items()]),
          "Every number of every stage (untruncated)")
    try:
        table("evaluation", evaluation_rows(outs("evaluate", "eval_report")),
              "Evaluation: systems x measures on the judged evaluation queries (first stage, fine-tuned "
              "retriever, trained and LLM reranking)")
    except Exception as e:  # monitoring must not fail the run
        md("evaluation", f"evaluation table could not be built: `{e}`", "evaluation (error)")
    png = outs("export", "histogram")
    if png:
        text = histogram_markdown(png)
        if text:
            md("grade-histogram", text, "Grade histogram of the exported labels")
    return out
