"""Run the configured judges over candidate pools, and the dry run.

    rows, usage = run_judges(cfg, pool)                 # -> JUDGMENTS rows, usage per judge
    table = judgments_table(rows)
    est = dry_run(cfg, pool)                            # calls / prompt tokens / cost per judge

`cfg` is a RunConfig (uses `judges`, `llm`, `work_dir`). An LLM judge names an endpoint of
`llm.endpoints` (or gets the first one); with no endpoint configured at all, only the local
judge can run (it is the default judge list) and an LLM judge is a clear configuration error.
"""
from __future__ import annotations

import logging
from typing import Callable

from grouprank.errors import UserError

from .base import JudgePool, check_complete, table_from_rows

log = logging.getLogger("grouprank.judges")

LLM_KINDS = ("pointwise", "listwise", "groupwise")


def judge_class(kind: str):
    """The judge class of an LLM judge kind (imported on first use; static imports, so the stage's
    cache key follows the judges' code and prompts: `grouprank.source_graph`)."""
    if kind == "pointwise":
        from .pointwise import PointwiseJudge as judge
    elif kind == "listwise":
        from .listwise import ListwiseJudge as judge
    elif kind == "groupwise":
        from .groupwise import GroupwiseJudge as judge
    else:
        raise UserError(f"unknown judge kind {kind!r}")
    return judge


def endpoint_for(cfg, spec):
    from grouprank.llm.from_config import choose_endpoint
    return choose_endpoint(cfg, spec.endpoint, f"judge {spec.id!r} (kind {spec.kind})",
                           " or use the local judge (kind: local)")


def judge_specs(cfg) -> list:
    """The configured judges with the run's seed where a judge sets none."""
    return [s if s.seed is not None else s.model_copy(update={"seed": cfg.seed}) for s in cfg.judges.judges]


def check_specs(cfg) -> None:
    ids = [s.id for s in cfg.judges.judges]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise UserError(f"judge ids must be unique, repeated: {dup}")
    if not ids:
        raise UserError("judges.judges is empty")
    for s in cfg.judges.judges:
        if s.kind in LLM_KINDS:
            endpoint_for(cfg, s)
        if s.select == "uncertain":
            if s.kind == "local":
                raise UserError(f"judge {s.id!r}: select='uncertain' (active labelling) is for LLM judges")
            src = cheap_judge_id(cfg, s)
            if src is None:
                raise UserError(f"judge {s.id!r}: active labelling needs a score judge that sees every pair "
                                f"(add a local judge, or name one in select_from)")
            if src not in ids:
                raise UserError(f"judge {s.id!r}: select_from={src!r} is not a configured judge ({ids})")


def cheap_judge_id(cfg, spec) -> str | None:
    """The judge whose scores guide `spec`'s active selection."""
    if spec.select_from:
        return spec.select_from
    return next((j.id for j in cfg.judges.judges if j.kind == "local"), None)


def _ordered(specs: list) -> list:
    """Judges that others select from run first (stable otherwise)."""
    sources = {s.select_from for s in specs if s.select == "uncertain" and s.select_from}
    first = [s for s in specs if s.kind == "local" or s.id in sources]
    return first + [s for s in specs if s not in first]


def make_local_scorer(pool: JudgePool, spec, background: dict[str, str] | None = None, cfg=None,
                      indexes=None):
    """The local judge's scorer, with the retrieval's BM25 settings (all of them: k1, b, method,
    stemmer, stopwords) and dense backend. `indexes`: the retrieval's opened indexes
    (`first_stage.indexes.RetrievalIndexes`), reused instead of indexing and encoding again."""
    from .local_calibration import load_calibration
    from .local_scorer import LocalScorer
    cal_path = getattr(spec, "local_calibration", None)
    rc = cfg.retrieval if cfg is not None else None
    bm25 = rc.bm25.model_dump() if rc is not None else None
    cache = (cfg.work_path / "local_judge_embeddings.sqlite") if cfg is not None else None
    # the retrieval stage's encoder backend (onnx by default: the same vectors as torch, faster on CPU)
    backend = rc.dense_backend if rc is not None else "torch"
    try:
        return LocalScorer(background if background is not None else pool.docs, use_e5=spec.local_e5,
                           use_mpnet=getattr(spec, "local_mpnet", False),
                           calibration=load_calibration(cal_path) if cal_path else None,
                           mpnet_max_seq_length=getattr(spec, "local_mpnet_max_tokens", 256),
                           # all-mpnet-base-v2's int8 export fails its own fidelity check: fp32 ONNX there
                           mpnet_backend="onnx" if backend == "onnx-int8" else backend,
                           bm25_params=bm25, embed_cache=cache, dense_backend=backend, indexes=indexes)
    except ValueError as e:  # name the judge and its calibration file
        raise ValueError(f"local judge {spec.id!r}: {e}" + (f" ({cal_path})" if cal_path else "")) from e


def run_judges(cfg, pool: JudgePool, *, background: dict[str, str] | None = None,
               only: list[str] | None = None, progress: Callable[[str, int, int], None] | None = None,
               api_keys: dict[str, str] | None = None, indexes=None) -> tuple[list[dict], dict]:
    """Run every configured judge (or those in `only`) on the pool. Returns (rows, usage) with
    usage[judge_id] = the LLM client's usage report (calls, tokens, cost, errors) or, for the
    local judge, {"pairs": n, "docs_encoded": ..., "reused_bm25": ..., "reused_embeddings": ...}.
    `background`: doc_id -> text for the local judge's BM25 statistics (default: the pool's
    documents; pass the whole collection when you have it). `indexes`: the retrieval's opened
    indexes for the local judge (see `make_local_scorer`).
    `api_keys`: endpoint name -> key (e.g. from a Prefect Secret); default: the env variable."""
    check_specs(cfg)
    rows: list[dict] = []
    usage: dict[str, dict] = {}
    scores: dict[str, dict[tuple[str, str], float]] = {}  # judge -> ok scores (for active selection)
    for spec in _ordered(judge_specs(cfg)):
        if only is not None and spec.id not in only:
            continue
        cb = (lambda d, n, _id=spec.id: progress(_id, d, n)) if progress else None
        if spec.kind == "local":
            from .local_judge import LocalJudge
            judge = LocalJudge(spec, make_local_scorer(pool, spec, background, cfg, indexes), progress=cb)
            r = judge.run(pool)
            st = judge.scorer.stats
            usage[spec.id] = {"kind": "local", "model": judge.scorer.model_id, "pairs": len(r), "calls": 0,
                              "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0,
                              "docs_encoded": st["docs_encoded"], "reused_bm25": st["shared"]["bm25"],
                              "reused_embeddings": st["shared"]["embeddings"]}
        else:
            from grouprank.llm.from_config import llm_client
            client = llm_client(cfg, None, who="", stage="judges", judge_id=spec.id, api_keys=api_keys,
                                endpoint=endpoint_for(cfg, spec))
            try:
                judge = judge_class(spec.kind)(spec, client, progress=cb, max_doc_chars=cfg.prompts.max_doc_chars)
                sel = None
                if spec.select == "uncertain":
                    sel = _select(cfg, spec, pool, scores)
                r = judge.run(sel.pool if sel is not None else pool)
                if sel is not None:
                    from .active import add_skipped_rows
                    r = add_skipped_rows(r, judge.info(), pool, sel,
                                         spec.passes if spec.kind == "groupwise" else 1)
                u = client.usage()
                u.pop("per_tag", None)
                usage[spec.id] = {"kind": spec.kind, **u}
                if sel is not None:
                    usage[spec.id]["active"] = sel.report
                if getattr(judge, "grading", None):  # pointwise: grades from log-probabilities vs generated
                    usage[spec.id]["grading"] = dict(judge.grading)
            finally:
                client.close()
        check_complete(r, pool, spec.id, spec.passes if spec.kind == "groupwise" else 1)
        n_failed = sum(1 for x in r if x["status"] == "failed")
        usage[spec.id]["injection_flags"] = sum(1 for x in r if x["injection_flag"])
        usage[spec.id]["pairs_skipped"] = sum(1 for x in r if x["status"] == "skipped")
        usage[spec.id]["pairs_failed"] = n_failed
        usage[spec.id]["pairs_ok"] = len(r) - n_failed - usage[spec.id]["pairs_skipped"]
        log.info("judge %s: %d rows, %d failed, %d skipped", spec.id, len(r), n_failed,
                 usage[spec.id]["pairs_skipped"])
        scores[spec.id] = {(x["query_id"], x["doc_id"]): x["score"] for x in r
                           if x["status"] == "ok" and x["score"] is not None and x["pass_index"] == 0}
        rows.extend(r)
    return rows, usage


def _select(cfg, spec, pool: JudgePool, scores: dict):
    """Active labelling: the sub-pool `spec` judges, from the cheap judge's scores."""
    from .active import select
    from .fusion import default_thresholds
    src = cheap_judge_id(cfg, spec)
    if src not in scores:
        raise UserError(f"judge {spec.id!r}: its selection source {src!r} has not run (give both to --only)")
    th = cfg.judges.grade_thresholds or default_thresholds(cfg.judges.grade_scale)
    sel = select(pool, scores[src], th, budget_pairs=spec.budget_pairs, budget_fraction=spec.budget_fraction,
                 budget_prompt_tokens=spec.budget_prompt_tokens, max_doc_chars=cfg.prompts.max_doc_chars)
    log.info("judge %s: active labelling selects %d of %d pairs (uncertainty >= %s); %d calls saved (%.2f%%)",
             spec.id, sel.report["selected"], sel.report["pairs"], sel.report["uncertainty_cut"],
             sel.report["skipped"], 100 * sel.report["calls_saved_fraction"])
    return sel


def _active_share(spec, n_pairs: int) -> float:
    """Share of the pool an active judge may judge at most (pair budgets only; 1 otherwise)."""
    if spec.select != "uncertain" or n_pairs == 0:
        return 1.0
    cap = float(n_pairs)
    if spec.budget_pairs is not None:
        cap = min(cap, spec.budget_pairs)
    if spec.budget_fraction is not None:
        cap = min(cap, spec.budget_fraction * n_pairs)
    return cap / n_pairs


def judgments_table(rows: list[dict]):
    return table_from_rows(rows)


def dry_run(cfg, pool: JudgePool, *, tokenizer=None) -> dict:
    """Estimate calls, prompt tokens and cost per judge before any call (nothing is sent).
    Requests already answered in the LLM cache are counted apart (they cost nothing)."""
    from grouprank.llm import estimate
    from grouprank.llm.from_config import cache_path
    check_specs(cfg)
    out: dict[str, dict] = {}
    cp = cache_path(cfg)
    for spec in judge_specs(cfg):
        if spec.kind == "local":
            out[spec.id] = {"kind": "local", "model": "local (not an LLM)", "pairs": pool.n_pairs, "calls": 0,
                            "prompt_tokens": 0, "completion_tokens": 0, "est_cost_usd": 0.0}
            continue
        ep = endpoint_for(cfg, spec)

        class _Stub:  # plan() only needs the endpoint
            endpoint = ep
        judge = judge_class(spec.kind)(spec, _Stub(), max_doc_chars=cfg.prompts.max_doc_chars)
        reqs = judge.plan(pool)
        share = _active_share(spec, pool.n_pairs)
        if share < 1.0:  # active labelling: the selection needs the cheap judge's scores; scale to the budget
            reqs = reqs[:int(round(len(reqs) * share))]
        est = estimate(reqs, ep, tokenizer, cache_path=cp, cache_mode=cfg.llm.cache_mode)
        est.pop("per_tag", None)
        if share < 1.0:
            est["active_budget_share"] = round(share, 4)
        out[spec.id] = {"kind": spec.kind, "pairs": pool.n_pairs * (spec.passes if spec.kind == "groupwise" else 1),
                        **est}
    total = {k: sum(v.get(k, 0) for v in out.values())
             for k in ("calls", "prompt_tokens", "completion_tokens", "est_cost_usd")}
    return {"judges": out, "total": total}
