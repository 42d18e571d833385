"""`grouprank evaluate --run FILE`: TREC run files (or the pipeline's run folders) scored against a
collection's qrels with ir-measures, written as a per-query CSV and a summary JSON.

Every run loses the collection's excluded ids (BRIGHT) before scoring; queries whose qrels hold no
relevant document (every grade below the relevance threshold) cannot score: they are counted,
named and warned about (they still average in as 0, as trec_eval -c does, so the number stays
comparable, and the summary says how many there were).
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

log = logging.getLogger(__name__)


def run_files(specs: Sequence[str]) -> dict[str, Path]:
    """{system name: run file} from --run values: FILE, NAME=FILE, or a folder (every `run*.trec`
    in it, e.g. <work_dir>/retrieve: run.trec, run_bm25.trec, run_dense.trec)."""
    from grouprank.errors import UserError
    out: dict[str, Path] = {}
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        p = Path(path)
        if not p.exists():
            raise UserError(f"--run: {p} does not exist")
        if p.is_dir():
            found = sorted(p.glob("run*.trec"))
            if not found:
                raise UserError(f"--run: no run*.trec files in folder {p}")
            for f in found:
                out[f"{name + ':' if name else ''}{f.stem}"] = f
        else:
            out[name or p.stem] = p
    return out


def read_run(path: Path):
    """A TREC run as a DataFrame (query_id, doc_id, score)."""
    import pandas as pd

    from grouprank.collections.trec import read_trec_run
    t = read_trec_run(path)
    return pd.DataFrame({"query_id": t["query_id"].to_pylist(), "doc_id": t["doc_id"].to_pylist(),
                         "score": t["score"].to_pylist()})


def queries_without_relevant(qrels, rel: int) -> list[str]:
    """Judged queries none of whose documents has grade >= rel: no measure can score them."""
    best: dict[str, int] = {}
    for q, g in zip(qrels["query_id"].astype(str), qrels["grade"].astype(int)):
        best[q] = max(best.get(q, -1), int(g))
    return sorted(q for q, g in best.items() if g < rel)


def grade_scale(qrels) -> dict[str, int]:
    """The collection's grade scale, from its qrels: {"min": 0, "max": G}."""
    g = [int(x) for x in qrels["grade"]]
    return {"min": min(g) if g else 0, "max": max(g) if g else 0}


def score_runs(runs: Mapping[str, Any], qrels, *, measures: Sequence[str], rel: int = 1,
               excluded: Mapping[str, set[str]] | None = None,
               baseline: str | None = None) -> tuple[dict[str, Any], Any]:
    """Score each run (DataFrame query_id, doc_id, score) on the judged queries of `qrels` (DataFrame
    query_id, doc_id, grade). Returns (summary, per-query DataFrame: system, query_id, one column per
    measure). With two runs or more, `summary["significance"]`: every run against `baseline` (default
    the first), paired on the judged queries (grouprank.evaluation.significance). A run that shares
    no query with the qrels is warned about (it scores 0 everywhere: wrong split or ids?)."""
    from .significance import compare, per_query_values
    import pandas as pd

    from .metrics import evaluate, remove_excluded
    no_rel = queries_without_relevant(qrels, rel)
    judged = sorted(set(qrels["query_id"].astype(str)))
    summary: dict[str, Any] = {
        "measures": list(measures), "relevance_threshold": rel,
        "relevance_note": f"binary measures (R@k, RR@k) count grade >= {rel} as relevant; nDCG uses the "
                          "linear gain of the grades (trec_eval)",
        "grade_scale": grade_scale(qrels), "judged_queries": len(judged),
        "queries_without_relevant": len(no_rel), "queries_without_relevant_ids": no_rel[:50],
        "systems": {}, "excluded_removed": {}}
    if no_rel:
        log.warning("%d of %d judged queries have no document with grade >= %d: every measure is 0 for them "
                    "(they are averaged in, as trec_eval -c does): %s%s", len(no_rel), len(judged), rel,
                    ", ".join(no_rel[:10]), " ..." if len(no_rel) > 10 else "")
    frames = []
    values: dict[str, dict] = {}
    summary["no_overlap"] = []
    for system, run in runs.items():
        n0 = len(run)
        run = remove_excluded(run, excluded)
        summary["excluded_removed"][system] = int(n0 - len(run))
        runq = set(run["query_id"].astype(str))
        agg, per = evaluate(run, qrels, measures, rel=rel, per_query=True)
        values[system] = per_query_values(per, measures)
        summary["systems"][system] = {k: round(float(v), 5) for k, v in agg.items()}
        summary["systems"][system]["queries_in_run"] = len(runq & set(judged))
        if judged and not runq & set(judged):
            summary["no_overlap"].append(system)
            log.warning("run %s shares no query with the qrels (%d run queries, e.g. %s; %d judged, e.g. %s): "
                        "every measure is 0 for it. Another split (evaluation.split) or other query ids?",
                        system, len(runq), ", ".join(sorted(runq)[:3]) or "-", len(judged), ", ".join(judged[:3]))
        wide = per.pivot(index="query_id", columns="measure", values="value").reset_index()
        wide.insert(0, "system", system)
        frames.append(wide[["system", "query_id", *measures]])
    per_query = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(values) >= 2:
        from grouprank.errors import UserError
        base = baseline or next(iter(values))
        if base not in values:
            raise UserError(f"--baseline {base!r} is not one of the runs: {', '.join(values)}")
        summary["significance"] = compare(values, base, measures)
    return summary, per_query


def write_outputs(summary: dict, per_query, out_dir: Path) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    cpath, spath = out_dir / "per_query.csv", out_dir / "summary.json"
    from grouprank.atomic import atomic_write, write_json_atomic

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(list(per_query.columns))
            for row in per_query.itertuples(index=False):
                w.writerow([f"{v:.5f}" if isinstance(v, float) else v for v in row])
    atomic_write(cpath, write_csv)
    write_json_atomic(spath, summary)
    return {"per_query": str(cpath), "summary": str(spath)}


def table_text(summary: dict) -> str:
    """The systems x measures table with each run's judged queries and, with several runs, the paired
    difference to the baseline (95% CI, p), as text."""
    from .significance import table_text as sig_table
    ms = summary["measures"]
    queries = {n: v.get("queries_in_run", 0) for n, v in summary["systems"].items()}
    return sig_table(summary["systems"], queries, summary.get("significance"), ms)


def evaluate_command(args, cfg) -> int:
    """`grouprank evaluate --run ...`: the runs against the configured collection's qrels."""
    import pyarrow.compute as pc

    from grouprank.collections import load_from_config
    from grouprank.errors import UserError
    from grouprank.queries.sources import AUTO, default_split, query_splits
    coll = load_from_config(cfg)
    split = cfg.evaluation.split
    if split == AUTO:
        d = default_split(query_splits(coll.queries), "evaluate")
        split = d[0] if d else None
    qrels = coll.qrels if split is None else coll.qrels.filter(pc.equal(coll.qrels["split"], split))
    if qrels.num_rows == 0:
        raise UserError(f"evaluate: no qrels in split {split!r} of {coll.name} (it has {coll.splits}); "
                        "set evaluation.split")
    qdf = qrels.to_pandas()[["query_id", "doc_id", "grade"]]
    runs = {name: read_run(p) for name, p in run_files(args.run).items()}
    measures = args.measure or list(cfg.evaluation.measures)
    summary, per_query = score_runs(runs, qdf, measures=measures, rel=args.rel, excluded=coll.excluded,
                                    baseline=getattr(args, "baseline", None))
    summary = {"collection": coll.name, "split": split or "all", "runs": {n: str(p) for n, p in
               run_files(args.run).items()}, **summary}
    out_dir = Path(args.out_dir) if args.out_dir else cfg.work_path / "evaluate_runs"
    paths = write_outputs(summary, per_query, out_dir)
    print(table_text(summary))
    extra = f"; {summary['queries_without_relevant']} without a relevant document" \
        if summary["queries_without_relevant"] else ""
    print(f"({coll.name}, split {summary['split']}: {summary['judged_queries']} judged queries{extra}; "
          f"relevant = grade >= {args.rel}, grades {summary['grade_scale']['min']}..{summary['grade_scale']['max']})")
    for name in summary["no_overlap"]:
        print(f"WARNING: run {name} shares no query with the qrels of split {summary['split']}: it scores 0 "
              "everywhere (another split, or other query ids?)")
    for k, v in paths.items():
        print(f"{k}: {v}")
    return 0


def add_run_file_args(p) -> None:
    """The evaluate command's options to score TREC run files instead of running the stage."""
    g = p.add_argument_group("run files", "score TREC run files against the collection's qrels instead of "
                             "running the evaluate stage (writes per_query.csv and summary.json into --out-dir, "
                             "default <work_dir>/evaluate_runs)")
    g.add_argument("--run", action="append", metavar="[NAME=]PATH",
                   help="a TREC run file, or a folder whose run*.trec files are scored (e.g. <work_dir>/retrieve: "
                        "the fused, BM25 and dense runs); repeatable")
    g.add_argument("--rel", type=int, default=1,
                   help="relevance threshold of the binary measures (R@k, RR@k): grade >= REL (default 1; "
                        "TREC DL uses 2)")
    g.add_argument("--baseline", metavar="NAME",
                   help="the run every other run is compared with (paired t-test / Wilcoxon on the per-query "
                        "values, 95%% CI of the difference); default the first run")
    g.add_argument("--measure", action="append", metavar="MEASURE",
                   help="ir-measures measure, repeatable (default evaluation.measures: nDCG@10, R@100, RR@10)")


def run_files_action(args, cfg) -> int | None:
    """`grouprank evaluate --run ...`: score the run files (an exit code); None: run the stage."""
    return evaluate_command(args, cfg) if getattr(args, "run", None) else None
