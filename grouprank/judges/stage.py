"""Stage `judge`: every configured judge (LLM pointwise / listwise / groupwise, or the offline local
judge) over the candidate pools.

Outputs in <work_dir>/judge/: `judgments` (JUDGMENTS, one row per judge x pair, failures included
with their reason) and `judge_report` (usage per judge). With `judges.dry_run` nothing is sent:
the stage writes only `estimate` (calls, tokens, cost per judge).

Input `indexes` (optional): the retrieve stage's index manifest. When given, the local judge opens
the retrieval's BM25 index and document embeddings from the store (`first_stage.indexes.open_indexes`)
instead of indexing the collection and encoding the pool documents again; the judgments are the
same. A manifest that does not fit these documents and settings (or a judge fed from files without
one) leaves the local judge building its own, with a warning.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from data_schemas import CANDIDATES, DOCUMENTS, JUDGMENTS, QUERIES
from grouprank.stage import Sharding, Stage, StageContext, StageResult, TableOut, file, table

from . import sharding

# Fields of `judges` that only the label fusion reads: changing them reruns `fuse` (and what
# follows) but not the judges themselves.
FUSION_FIELDS = ("fusion", "beta", "grade_scale", "grade_thresholds", "rank_only_fractions", "weights_from",
                 "calibration_min_pairs")

log = logging.getLogger("grouprank.judges")


def retrieval_indexes(manifest: Path | None, documents, cfg):
    """The retrieval's indexes named by `manifest`, opened for these documents (None, with a
    warning, when they do not fit: the local judge then builds its own)."""
    if manifest is None:
        return None
    from grouprank.first_stage.indexes import IndexMismatch, open_indexes
    try:
        return open_indexes(manifest, documents, cfg, cfg.work_path)
    except IndexMismatch as e:
        log.warning("judge: not reusing the retrieval's indexes (%s); the local judge builds its own", e)
        return None


def dry_run_text(est: dict) -> str:
    """The dry run's totals in words: the completion figure is a ceiling (every call using its whole
    max_tokens), and a cost of $0 says whether prices are set at all."""
    t = est.get("total") or {}
    llm = [e for e in (est.get("judges") or {}).values() if e.get("kind") != "local"]
    priced = any(e.get("prices_set") for e in llm)
    cost = (f"${t.get('est_cost_usd', 0.0):,.4f} at the endpoints' prices, completion at its ceiling" if priced
            else "$0 (no prices set: llm.endpoints[].price_prompt_per_mtok / price_completion_per_mtok)")
    return (f"{t.get('calls', 0):,} calls, {t.get('prompt_tokens', 0):,} prompt tokens, at most "
            f"{t.get('completion_tokens', 0):,} completion tokens (a ceiling: max_tokens per call; answers are "
            f"usually shorter); cost {cost}")


def run(inputs: dict, cfg, ctx: StageContext) -> StageResult:
    from grouprank.judges.base import JudgePool
    from grouprank.judges.runner import dry_run, judgments_table, run_judges
    from grouprank.text import document_text_map
    cands, docs, qs = inputs["candidates"], inputs["documents"], inputs["mined_queries"]
    pool = JudgePool.from_tables(cands, docs, qs, max_per_query=cfg.judges.max_per_query,
                                 max_query_chars=cfg.prompts.max_query_chars)
    stats: dict[str, Any] = {"queries": len(pool.pools), "pairs": pool.n_pairs, "judges": len(cfg.judges.judges)}
    if cfg.judges.dry_run:
        est = dry_run(cfg, pool)
        p = ctx.write_json("dry_run.json", est, indent=1)
        stats.update({f"est.{k}": v for k, v in est["total"].items()})
        for jid, e in est["judges"].items():
            stats[f"{jid}.est_calls"] = e["calls"]
            stats[f"{jid}.est_prompt_tokens"] = e["prompt_tokens"]
            stats[f"{jid}.est_cost_usd"] = e.get("est_cost_usd", 0.0)
        log.info("judge dry run (nothing sent): %s", dry_run_text(est))
        return StageResult({"estimate": p}, stats)
    local = any(j.kind == "local" for j in cfg.judges.judges)
    indexes = retrieval_indexes(inputs.get("indexes"), docs, cfg) if local else None
    from grouprank.progress import LoggingProgress
    progress = LoggingProgress("judge", ctx.progress, unit="requests",  # the local judge logs its own
                               quiet_parts={j.id for j in cfg.judges.judges if j.kind == "local"})
    rows, usage = run_judges(cfg, pool, background=document_text_map(docs), progress=progress,
                             api_keys=ctx.api_keys, indexes=indexes)
    rpath = ctx.write_json("judge_report.json", usage, indent=1)
    check_failures(rows, cfg.judges.max_failed_fraction)
    stats["rows"] = len(rows)
    stats["failed"] = sum(1 for r in rows if r["status"] == "failed")
    stats["injection_flags"] = sum(1 for r in rows if r["injection_flag"])
    for jid, u in usage.items():
        for k in ("pairs_ok", "pairs_failed", "pairs_skipped", "calls", "cached_calls", "retries", "prompt_tokens",
                  "completion_tokens", "cost_usd", "docs_encoded", "reused_bm25", "reused_embeddings"):
            if k in u and isinstance(u[k], (int, float)):
                stats[f"{jid}.{k}"] = u[k]
    extra = {"usage": usage, "judges": cfg.judges.model_dump(mode="json")}
    return StageResult({"judgments": TableOut(judgments_table(rows), extra), "judge_report": rpath}, stats)


def check_failures(rows: list[dict], bound: float) -> None:
    """Raise a UserError with a summary when, for some LLM judge, more than `bound` of its rows
    failed for the endpoint's sake (grouprank.llm.retry.transport_failure); failures of the answer
    itself (unparsable, cut, documents missing) are the judge's data, not an outage."""
    from collections import Counter

    from grouprank.errors import UserError
    from grouprank.llm.retry import transport_failure
    per: dict[str, list] = {}
    for r in rows:
        if r.get("kind") == "local" or r["status"] == "skipped":  # skipped: never sent (active labelling)
            continue
        a = per.setdefault(r["judge_id"], [0, Counter()])
        a[0] += 1
        why = transport_failure(r.get("error")) if r["status"] == "failed" else None
        if why:
            a[1][why] += 1
    bad = []
    for jid, (n, reasons) in sorted(per.items()):
        k = sum(reasons.values())
        if n and k and k / n > bound:
            top = ", ".join(f"{why} x{c}" for why, c in reasons.most_common(3))
            bad.append(f"judge {jid!r}: {k} of {n} pairs failed for the endpoint's sake ({top})")
    if bad:
        raise UserError("judge: " + "; ".join(bad) + f" (judges.max_failed_fraction={bound:g}). Rerun the same "
                        "command to resume: the answers received are cached, only the failed requests are sent "
                        "again")


def _any_llm_judge(cfg) -> bool:
    return (not cfg.judges.dry_run) and any(j.kind != "local" for j in cfg.judges.judges)


def calibration_files(cfg) -> dict[str, str]:
    """The local judges' calibration files: their content is in the stage's cache key."""
    return {f"calibration:{j.id}": j.local_calibration for j in cfg.judges.judges
            if j.kind == "local" and j.local_calibration}


def _cli_args(p) -> None:
    p.add_argument("--dry-run", action="store_true", help="estimate calls, prompt tokens and cost; send nothing")


def _cli_overrides(args) -> dict:
    return {"judges.dry_run": True} if args.dry_run else {}


STAGE = Stage(
    name="judge", title="LLM judges", run=run, builds_models=True,
    help="judge candidate pools with the configured judges (LLM or local)",
    inputs=(table("documents", DOCUMENTS), table("mined_queries", QUERIES), table("candidates", CANDIDATES),
            file("indexes", optional=True, doc="the retrieve stage's index manifest: the local judge reuses "
                 "its BM25 index and document embeddings")),
    outputs=(table("judgments", JUDGMENTS, optional=True), file("judge_report", "judge_report.json", optional=True),
             file("estimate", "dry_run.json", optional=True)),
    # the local judge reads retrieval's BM25 parameters and encoder settings (and opens its indexes)
    sections=("data", ("judges", FUSION_FIELDS), "llm", "retrieval", "prompts", "seed"), uses_llm=_any_llm_judge,
    reads=calibration_files, sharding=Sharding(plan=sharding.plan, run_shard=sharding.run_shard),
    timeout_s=48 * 3600, retries=3, progress_parts=lambda c: len(c.judges.judges),
    cli_args=_cli_args, cli_overrides=_cli_overrides,
)
