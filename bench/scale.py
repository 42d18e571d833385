"""How the sharded retrieve stage's time and memory grow with the corpus, on Dask and on Ray.

    .venv/bin/python bench/scale.py --out bench/results/scale.json [--n 10000 --n 30000] [--workers 1 --workers 2]

For each N: a synthetic BEIR folder of N short documents (30-word windows of the shared
collections' own documents: Cranfield, CISI, NPL; nothing from outside) with Cranfield's test
queries (qrels: the window that opens each judged document). Then, each in a fresh work dir:
- `unsharded`: the retrieve stage in one process (`run_pipeline(..., sharded=False)`), in a child
  process whose peak RSS is sampled;
- `dask` / `ray` with 1 and 2 workers (1 thread each): the Prefect `retrieve` flow on a local
  cluster (`flows.runners.make_task_runner`), its corpus-encoding shards mapped as tasks; the
  upstream stages (load, mine_queries) are run first, so the time is the retrieve stage's (shards
  + merge) plus the flow's own overhead.
Every point's retrieve outputs (candidates, runs) are compared byte for byte with the unsharded
run's (`identical_to_unsharded`). `peak_rss_mb`: the peak of the summed RSS of the processes doing
the work (the child for `unsharded`; the Dask/Ray worker processes and Ray's own daemons for the
clusters, not the flow's process nor the Prefect server), sampled every 0.2 s.
`speedup`: wall(1 worker) / wall(2 workers) at the largest N, per engine, the whole flow run
(cluster start, worker imports and model loads included); `encode_speedup`: the same for the
span of the shards (first shard's start to the last one's end, from their completion records).
Then the judge stage with the local judge (the default judge) on the same pools, `--queries`
queries x ~50 pooled candidates: unsharded in a child process, and as the Prefect `judge` flow on
each cluster (its upstream stages reused from the retrieve run); its judgments compared row for row
with the unsharded run's. The local judge reuses the retrieve stage's indexes (BM25, embeddings),
so its work is opening them and scoring the pairs; its shard plan covers the LLM judges only (their
throughput is the endpoint's, `bench/replicas.py`). With `--judge-llm-latency-ms L` the judge is an
LLM pointwise judge instead, against a local OpenAI-compatible server on 127.0.0.1 answering after a
fixed L ms (`tests.support.responders:score_json`, a scripted score, no model: the CPU stays with the
workers), `--judge-concurrency` requests in flight per client, its queries in shards of
`--judge-shard-queries` (per-writer LLM cache): each worker's shards keep their own requests in
flight, which is what a second worker adds.

    .venv/bin/python bench/scale.py --n 2000 --queries 60 --judge-llm-latency-ms 100 --out bench/results/scale_judge_llm.json

`--plot PNG` draws per-document time and peak
RSS against N from this report and those given with `--with` (`--plot-only`: from those alone).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from _common import ROOT, setup, write_report  # noqa: E402  (bench/_common.py)

ENV = setup("scale", RAY_USAGE_STATS_ENABLED="0", PREFECT_SERVER_ANALYTICS_ENABLED="false")

COMPARED = ("candidates.parquet", "candidates.trec", "run.trec", "run_bm25.trec", "run_dense.trec")
WINDOW = 30  # words per synthetic document


def synthetic_collection(n: int, folder: Path) -> Path:
    """A BEIR folder of `n` short documents from the shared collections' text (see module doc)."""
    from grouprank.collections import load_collection
    if (folder / "corpus.jsonl").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    windows, first_of = [], {}
    for name in ("cranfield", "cisi", "npl"):
        docs = load_collection(name).documents.to_pylist()
        for d in docs:
            words = f"{d.get('title') or ''} {d['text']}".split()
            for k in range(0, max(1, len(words)), WINDOW):
                if name == "cranfield" and k == 0:
                    first_of[str(d["doc_id"])] = len(windows)
                windows.append(" ".join(words[k:k + WINDOW]))
    with open(folder / "corpus.jsonl", "w") as f:
        for i in range(n):  # cycles over the windows when n exceeds them, each copy its own document
            f.write(json.dumps({"_id": f"s{i}", "title": "", "text": windows[i % len(windows)]}) + "\n")
    cran = load_collection("cranfield")
    queries = cran.queries.to_pylist()
    (folder / "qrels").mkdir(exist_ok=True)
    kept = set()
    with open(folder / "qrels" / "test.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for r in cran.qrels.to_pylist():
            w = first_of.get(str(r["doc_id"]))
            if w is not None and w < n and int(r["grade"] or 0) > 0:
                f.write(f"{r['query_id']}\ts{w}\t1\n")
                kept.add(str(r["query_id"]))
    with open(folder / "queries.jsonl", "w") as f:
        for q in queries:
            if str(q["query_id"]) in kept:
                f.write(json.dumps({"_id": str(q["query_id"]), "text": q["text"]}) + "\n")
    return folder


def settings(path: Path, work: Path, shard_size: int, queries: int = 20, judge_llm: dict | None = None) -> dict:
    """The run's settings; `judge_llm` {base_url, concurrency, shard_queries}: a pointwise LLM judge."""
    out = {"work_dir": str(work), "data.format": "beir", "data.path": str(path), "data.collection": "synthetic",
           "queries.splits": ["test"], "queries.leakage_eval_splits": [], "queries.max_queries": queries,
           "retrieval.shard_size": shard_size, "judges.judges": [{"id": "local", "kind": "local"}]}
    if judge_llm:
        out.update({"judges.judges": [{"id": "pw", "kind": "pointwise"}],
                    "judges.shard_queries": judge_llm["shard_queries"], "llm.cache_mode": "per_writer",
                    "llm.endpoints": [{"name": "judge", "base_url": judge_llm["base_url"], "model": "scripted",
                                       "max_concurrency": judge_llm["concurrency"]}]})
    return out


def judgments_digest(work: Path) -> str:
    """The judgments' rows (not the file's bytes: its metadata holds the run's paths)."""
    import pyarrow.parquet as pq
    rows = pq.read_table(work / "judge" / "judgments.parquet").to_pylist()
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()


def hashes(folder: Path) -> dict[str, str]:
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in COMPARED}


class RssSampler:
    """Peak of the summed RSS of this process's descendants (or of one pid's tree), less the
    processes that do not do the work (the Prefect server)."""

    def __init__(self, root_pid: int | None = None, include_root: bool = False):
        import psutil
        self.root = psutil.Process(root_pid or os.getpid())
        self.include_root = include_root
        self.peak = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _sample(self) -> float:
        import psutil
        total = 0
        procs = self.root.children(recursive=True) + ([self.root] if self.include_root else [])
        for p in procs:
            try:
                cmd = " ".join(p.cmdline())
                if "prefect" in cmd and "server" in cmd or "uvicorn" in cmd:
                    continue
                total += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return total / 2**20

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self._sample())

    def stop(self) -> float:
        self._stop.set()
        self._t.join(timeout=5)
        return round(self.peak, 1)


UNSHARDED = r"""
import json, sys, time
from grouprank.config import RunConfig
from grouprank.executor import run_pipeline
cfg, stage = RunConfig.load(None, json.loads(sys.argv[1])), sys.argv[2]
run_pipeline(cfg, ["mine_queries"] + (["retrieve"] if stage == "judge" else []), log_fn=lambda m: None)
t = time.perf_counter()
s = run_pipeline(cfg, [stage], sharded=False, log_fn=lambda m: None)
print("RESULT " + json.dumps({"wall_s": time.perf_counter() - t, "stats": s["stages"][stage]["stats"]}))
"""


def unsharded(sets: dict, stage: str = "retrieve") -> dict:
    """The stage unsharded in a child process (its upstream stages first, reused when recorded)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", UNSHARDED, json.dumps(sets), stage], cwd=str(ROOT), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rss = RssSampler(proc.pid, include_root=True)
    out, err = proc.communicate()
    peak = rss.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"the unsharded run failed: {err[-3000:]}")
    res = json.loads(out.split("RESULT ", 1)[1])
    return {"wall_s": round(res["wall_s"], 2), "peak_rss_mb": peak, "stats": res["stats"]}


def on_cluster(sets: dict, engine: str, workers: int, stage: str = "retrieve") -> dict:
    """The Prefect flow ending at `stage` on a fresh local cluster; its upstream stages are run (or
    reused) first, so the time is the stage's plus the flow's own overhead."""
    from flows.__main__ import get_flow
    from flows.runners import make_task_runner
    from grouprank.config import RunConfig
    from grouprank.executor import run_pipeline
    cfg = RunConfig.load(None, sets)
    run_pipeline(cfg, ["mine_queries"], log_fn=lambda m: None)  # upstream: not what is measured
    flow = get_flow(stage).with_options(task_runner=make_task_runner(engine, n_workers=workers))
    rss = RssSampler()
    t = time.perf_counter()
    summary = flow(config=cfg)
    wall = time.perf_counter() - t
    st = summary["stages"][stage]
    if stage != "retrieve":
        return {"wall_s": round(wall, 2), "peak_rss_mb": rss.stop(), "stage_s": st.get("wall_s"),
                "shards": st.get("shards"), "stats": st.get("stats")}
    recs = [json.loads(p.read_text()) for p in (Path(sets["work_dir"]) / "_stages" / "retrieve.shards").rglob("*.json")]
    span = max(r["finished"] for r in recs) - min(r["started"] for r in recs)  # first shard start to last end
    return {"wall_s": round(wall, 2), "peak_rss_mb": rss.stop(), "shards": st.get("shards"),
            "merge_s": st.get("wall_s"), "shards_span_s": round(span, 2),
            "shard_s_sum": round(sum(r["wall_s"] for r in recs), 2)}


def plot(reports: list[dict], out: str) -> None:
    """Retrieve time per document, judge time per pair and peak RSS against N, one line per stage,
    engine and worker count."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    series: dict[tuple[str, str], dict[int, dict]] = {}
    for rep in reports:
        for p in rep["points"]:
            series.setdefault((p.get("stage", "retrieve"), f"{p['engine']} x{p['workers']}"), {})[p["n_docs"]] = p
    fig, (a, j, b) = plt.subplots(1, 3, figsize=(15, 4))
    for (stage, name), pts in sorted(series.items()):
        ns = sorted(pts)
        (a if stage == "retrieve" else j).plot(ns, [pts[n]["per_item_s"] * 1000 for n in ns], marker="o", label=name)
        b.plot(ns, [pts[n]["peak_rss_mb"] / 1024 for n in ns], marker="o", label=f"{stage}: {name}")
    for ax, yl in ((a, "retrieve: wall time per document (ms)"), (j, "judge (local): wall time per pair (ms)"),
                   (b, "peak RSS (GiB)")):
        ax.set_xscale("log")
        ax.set_xlabel("documents (N)")
        ax.set_ylabel(yl)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("bench/scale.py: sharded retrieve and the local judge, 2-core machine")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot: {out}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="the report to write (not with --plot-only)")
    ap.add_argument("--plot-only", action="store_true", help="draw --plot from the --with reports, run nothing")
    ap.add_argument("--n", type=int, action="append", help="corpus sizes (default 10000)")
    ap.add_argument("--workers", type=int, action="append", help="worker counts (default 1 and 2)")
    ap.add_argument("--engines", default="dask,ray")
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=100, help="mined queries (pools judged by the local judge)")
    ap.add_argument("--stages", default="retrieve,judge")
    ap.add_argument("--judge-llm-latency-ms", type=float, default=None, help="judge with a pointwise LLM judge "
                    "against a local server with this fixed latency (default: the local judge)")
    ap.add_argument("--judge-concurrency", type=int, default=2, help="LLM judge: requests in flight per client")
    ap.add_argument("--judge-shard-queries", type=int, default=5, help="LLM judge: queries per judge shard")
    ap.add_argument("--scratch", default=str(ROOT / "grouprank_output" / "bench_scale"))
    ap.add_argument("--plot", default=None, help="also draw time per document and peak RSS against N to this PNG, "
                    "from this report and the ones given with --with")
    ap.add_argument("--with", dest="others", action="append", default=[], help="another scale report for the plot")
    args = ap.parse_args(argv)
    if args.plot_only:
        plot([json.loads(Path(f).read_text()) for f in args.others], args.plot)
        return 0
    if not args.out:
        ap.error("--out is required")
    if args.judge_llm_latency_ms is None:
        return measure(args, None)
    from tests.support.fake_openai_server import start_local_server
    with start_local_server("tests.support.responders:score_json", latency_ms=args.judge_llm_latency_ms) as srv:
        return measure(args, {"base_url": srv.base_url, "concurrency": args.judge_concurrency,
                              "shard_queries": args.judge_shard_queries})


def measure(args, judge_llm: dict | None) -> int:
    load0 = round(os.getloadavg()[0], 2)
    sizes, workers = args.n or [10000], args.workers or [1, 2]
    engines = [e for e in args.engines.split(",") if e]
    scratch = Path(args.scratch)
    import shutil
    stages = [x for x in args.stages.split(",") if x]
    points, identical = [], True
    for n in sizes:
        coll = synthetic_collection(n, scratch / f"synthetic_{n}")
        work = scratch / f"work_{n}"
        shutil.rmtree(work, ignore_errors=True)
        sets = settings(coll, work / "unsharded", args.shard_size, args.queries, judge_llm)
        ref = unsharded(sets)
        ref_hash = hashes(work / "unsharded" / "retrieve")
        points.append({"n_docs": n, "engine": "unsharded", "workers": 1, "stage": "retrieve",
                       "wall_s": ref["wall_s"], "per_item_s": round(ref["wall_s"] / n, 6),
                       "peak_rss_mb": ref["peak_rss_mb"], "identical_to_unsharded": True})
        print(json.dumps(points[-1]), flush=True)
        ref_judge = None
        if "judge" in stages:
            j = unsharded(sets, "judge")
            ref_judge = judgments_digest(work / "unsharded")
            pairs = int(j["stats"]["pairs"])
            points.append({"n_docs": n, "engine": "unsharded", "workers": 1, "stage": "judge", "pairs": pairs,
                           "wall_s": j["wall_s"], "per_item_s": round(j["wall_s"] / pairs, 6),
                           "peak_rss_mb": j["peak_rss_mb"], "identical_to_unsharded": True})
            print(json.dumps(points[-1]), flush=True)
        for engine in engines:
            for w in workers:
                wd = work / f"{engine}_{w}"
                wsets = settings(coll, wd, args.shard_size, args.queries, judge_llm)
                r = on_cluster(wsets, engine, w)
                same = hashes(wd / "retrieve") == ref_hash
                identical &= same
                points.append({"n_docs": n, "engine": engine, "workers": w, "stage": "retrieve",
                               "wall_s": r["wall_s"], "per_item_s": round(r["wall_s"] / n, 6),
                               "peak_rss_mb": r["peak_rss_mb"], "merge_s": r["merge_s"],
                               "shards_span_s": r["shards_span_s"], "shard_s_sum": r["shard_s_sum"],
                               "per_item_encode_s": round(r["shards_span_s"] / n, 6),
                               "shards": r["shards"], "identical_to_unsharded": same})
                print(json.dumps(points[-1]), flush=True)
                if ref_judge is not None:
                    j = on_cluster(wsets, engine, w, "judge")
                    same = judgments_digest(wd) == ref_judge
                    identical &= same
                    pairs = int(j["stats"]["pairs"])
                    points.append({"n_docs": n, "engine": engine, "workers": w, "stage": "judge", "pairs": pairs,
                                   "wall_s": j["wall_s"], "per_item_s": round(j["wall_s"] / pairs, 6),
                                   "stage_s": j["stage_s"], "per_item_stage_s": round(j["stage_s"] / pairs, 6),
                                   "peak_rss_mb": j["peak_rss_mb"], "shards": j["shards"],
                                   "identical_to_unsharded": same})
                    print(json.dumps(points[-1]), flush=True)
                shutil.rmtree(wd / "indexes", ignore_errors=True)
    speedup, encode_speedup, judge_speedup = {}, {}, {}
    for engine in engines:  # at the largest N measured with 1 and with 2 workers
        for stage, out in (("retrieve", speedup), ("judge", judge_speedup)):
            pts = [p for p in points if p["engine"] == engine and p["stage"] == stage]
            both = [n for n in sizes if {1, 2} <= {p["workers"] for p in pts if p["n_docs"] == n}]
            if not both:
                continue
            at = {p["workers"]: p for p in pts if p["n_docs"] == max(both)}
            out[engine] = round(at[1]["wall_s"] / at[2]["wall_s"], 3)
            if stage == "retrieve":
                encode_speedup[engine] = round(at[1]["shards_span_s"] / at[2]["shards_span_s"], 3)
    report = {"speedup": speedup, "encode_speedup": encode_speedup, "judge_speedup": judge_speedup,
              "identical_to_unsharded": identical,
              "points": points,
              "settings": {"sizes": sizes, "workers": workers, "shard_size": args.shard_size,
                           "words_per_document": WINDOW,
                           "stages": stages, "queries": args.queries,
                           "judge": ("local (unsharded: the judge stage's shards are its LLM judges' requests, an "
                                     "endpoint's throughput, bench/replicas.py)") if not judge_llm else
                           {"kind": "pointwise LLM judge, scripted server on 127.0.0.1 (no model)",
                            "latency_ms": args.judge_llm_latency_ms, "concurrency_per_client": args.judge_concurrency,
                            "shard_queries": args.judge_shard_queries},
                           "under_load": load0 > 1.5,
                           "note": f"1-minute load average {load0} when the bench started (1.5 or more: other "
                                   f"jobs were running, not an idle-machine timing)"}}
    write_report(args.out, report)
    print(json.dumps({"speedup": speedup, "identical_to_unsharded": identical}))
    if args.plot:
        plot([report] + [json.loads(Path(f).read_text()) for f in args.others], args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
