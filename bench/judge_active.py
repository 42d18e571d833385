"""Agreement with human labels of the local judge, a real local LLM judge and active labelling.

    .venv/bin/python bench/judge_active.py --collection trec_dl19_passage --max-queries 20 \
        --max-docs-per-query 8 --budgets 0.1 0.25 0.5 --out bench/results/judge_active_dl19.json

Every judge runs through the pipeline's own code (`judges.runner.run_judges`, the LLM client, the
managed llama.cpp server with SmolLM2-135M-Instruct unless --base-url names another endpoint) on
the judged pool (human-labelled pairs only, doc-id order). Configurations, each scored against the
human grades (weighted kappa of the fused 0-3 labels, Spearman of the fused score, nDCG@10 of the
judge's ranking), with calls, parse failures and pairs per second:

  local                  the offline local judge alone (its shipped calibration was fitted on DL19:
                         on DL19 it is optimistic)
  llm_pointwise_logprob  the LLM's pointwise grade as the expected value over the grade tokens
  llm_pointwise_generated  the same answers' generated number (log-probabilities not asked for)
  llm_groupwise          groups of --group-size, one pass
  active@F               local on every pair + the LLM pointwise judge on the most uncertain share F
                         (`select: uncertain`), fused with weights from agreement with the human
                         labels, cross-fitted: the weights of one half of the queries come from the
                         other half (two folds), so no pair's labels were used to weight its judges.
Active runs ask the LLM as the main configuration does (no log-probabilities: generated grades) and
reuse the pointwise answers that parsed from the LLM cache (same prompts; a failed parse is asked
again): their `calls` count the
requests the configuration needs, `calls_saved` those it does not send against judging every pair.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import setup, write_report  # noqa: E402

setup("judge_active")

from judge_agreement import folds_of, judge_pool  # noqa: E402  (bench/judge_agreement.py)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def score(rows, qrels, weights=None, grade_scale=3) -> dict:
    """Agreement of the judgments `rows`, fused with `weights`, with the human grades."""
    from data_schemas import JUDGMENTS
    from grouprank.judges.fusion import fuse_labels
    L = fuse_labels(JUDGMENTS.from_records(rows), weights=weights, grade_scale=grade_scale)[0].to_pandas()
    return score_labels(L, qrels, grade_scale)


def score_labels(L, qrels, grade_scale=3) -> dict:
    """Weighted kappa of the fused grades, Spearman of the fused score and nDCG@10 of the fused-score
    ranking against the human grades (`L`: a LABELS frame)."""
    import pandas as pd
    from scipy.stats import spearmanr

    from grouprank.evaluation.agreement import weighted_kappa
    from grouprank.evaluation.metrics import evaluate
    m = qrels.merge(L, on=["query_id", "doc_id"], how="left", suffixes=("_h", "_j"))
    lab = m[m.grade_j.notna()]
    out = {"pairs": int(len(m)), "labelled": int(len(lab))}
    if len(lab) > 1:
        out["kappa_weighted"] = round(weighted_kappa(lab.grade_h.astype(int), lab.grade_j.astype(int),
                                                     labels=range(grade_scale + 1)), 4)
        out["spearman"] = round(float(spearmanr(lab.grade_h, lab.fused_score).statistic), 4)
        run = pd.DataFrame({"query_id": L.query_id, "doc_id": L.doc_id, "score": L.fused_score})
        out["ndcg@10"] = round(float(evaluate(run, qrels[["query_id", "doc_id", "grade"]],
                                              measures=("nDCG@10",))["nDCG@10"]), 4)
    return out


def crossfit_weights(rows, qrels, qids: list[str], min_pairs: int) -> dict[str, dict[str, float] | None]:
    """query id -> weights fitted on the other fold's queries."""
    from data_schemas import JUDGMENTS
    from grouprank.judges.fusion import agreement_weights
    out = {}
    folds = folds_of(qids, 2)
    for i, fold in enumerate(folds):
        other = set(folds[1 - i])
        w, _ = agreement_weights(JUDGMENTS.from_records([r for r in rows if r["query_id"] in other]),
                                 qrels[qrels.query_id.isin(other)], min_pairs)
        for q in fold:
            out[q] = w
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--collection", default="trec_dl19_passage")
    p.add_argument("--max-queries", type=int, default=20)
    p.add_argument("--max-docs-per-query", type=int, default=8)
    p.add_argument("--budgets", type=float, nargs="+", default=[0.1, 0.25, 0.5])
    p.add_argument("--managed", default="smollm2", help="local model served by grouprank (smollm2, gemma3-270m, .gguf)")
    p.add_argument("--base-url", help="an OpenAI-compatible endpoint instead of the managed model")
    p.add_argument("--model", default="SmolLM2-135M-Instruct")
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--parse-retries", type=int, default=0)
    p.add_argument("--min-pairs", type=int, default=30, help="calibration pairs per judge for agreement weights")
    p.add_argument("--work-dir", default="grouprank_output/bench_judge_active", help="LLM cache and judge state")
    p.add_argument("--configs", nargs="+", default=["local", "pointwise", "groupwise", "active"],
                   help="which configurations to run (local is always run: the active ones build on it)")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)

    import pandas as pd

    from grouprank.collections import load_collection
    from grouprank.config import RunConfig
    from grouprank.judges.runner import run_judges
    coll = load_collection(a.collection)
    pool, qrels = judge_pool(coll, a.max_queries, a.max_docs_per_query)
    qrels = pd.DataFrame(qrels)[["query_id", "doc_id", "grade"]]
    qids = sorted(pool.pools)
    log(f"{a.collection}: {len(qids)} queries, {pool.n_pairs} judged pairs")
    ep = {"name": "llm", "model": a.model, "max_concurrency": 2, "timeout_s": 300, "parse_retries": a.parse_retries}
    ep.update({"base_url": a.base_url} if a.base_url else {"managed": a.managed})

    def run(judges, endpoint_extra=None):
        cfg = RunConfig.model_validate({"work_dir": a.work_dir, "llm": {"endpoints": [{**ep, **(endpoint_extra or {})}]},
                                        "judges": {"judges": judges}})
        t = time.perf_counter()
        rows, usage = run_judges(cfg, pool)
        return rows, usage, time.perf_counter() - t

    report = {"collection": a.collection, "queries": len(qids), "pairs": pool.n_pairs,
              "endpoint": a.base_url and "user endpoint" or f"managed:{a.managed}", "model": a.model, "configs": {}}

    def record(name, rows, usage, secs, weights=None, extra=None, labels=None):
        r = score(rows, qrels, weights) if labels is None else score_labels(labels, qrels)
        llm = [u for u in usage.values() if u.get("kind") != "local"]
        calls = sum(u.get("calls", 0) + u.get("cached_calls", 0) for u in llm)
        r.update({"calls": calls, "wall_s": round(secs, 1), "pairs_per_s": round(pool.n_pairs / secs, 3) if secs else None})
        if llm:
            r["parse_failure_rate"] = llm[0].get("parse_failure_rate")
            r["pairs_ok_llm"] = sum(u.get("pairs_ok", 0) for u in llm)
            if "grading" in llm[0]:
                r["grading"] = llm[0]["grading"]
        r.update(extra or {})
        report["configs"][name] = r
        log(f"  {name}: {r}")
        return r

    rows, usage, secs = run([{"id": "local", "kind": "local"}])
    record("local", rows, usage, secs)
    pw = {"id": "llm", "kind": "pointwise", "max_tokens": a.max_tokens}
    if "pointwise" in a.configs:
        rows, usage, secs = run([pw])
        record("llm_pointwise_logprob", rows, usage, secs)
        rows, usage, secs = run([pw], {"logprobs": False})
        record("llm_pointwise_generated", rows, usage, secs)
    if "groupwise" in a.configs:
        rows, usage, secs = run([{"id": "llm", "kind": "groupwise", "group_size": a.group_size, "passes": 1,
                                  "max_tokens": max(a.max_tokens, 96)}])
        record("llm_groupwise", rows, usage, secs)
    for f in (a.budgets if "active" in a.configs else []):
        rows, usage, secs = run([{"id": "local", "kind": "local"},  # the LLM graded as configs/main.yaml does
                                 {**pw, "select": "uncertain", "budget_fraction": f}], {"logprobs": False})
        cw = crossfit_weights(rows, qrels, qids, a.min_pairs)
        parts = []
        for fold_qs in folds_of(qids, 2):
            w = cw[fold_qs[0]]
            sub = [r for r in rows if r["query_id"] in set(fold_qs)]
            parts.append((sub, w))
        # each fold fused with the weights fitted on the other fold, then the fused labels pooled
        from data_schemas import JUDGMENTS
        from grouprank.judges.fusion import fuse_labels
        labels = pd.concat([fuse_labels(JUDGMENTS.from_records(sub), weights=w)[0].to_pandas() for sub, w in parts])
        act = usage["llm"]["active"]
        record(f"active@{f}", rows, usage, secs, labels=labels,
               extra={"selected": act["selected"], "calls_saved": act["skipped"],
                      "calls_saved_fraction": act["calls_saved_fraction"], "weights_by_fold": [w for _, w in parts]})
    write_report(a.out, report)
    log(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
