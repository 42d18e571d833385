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
Only the retrieve stage is measured: the judge stage's shards are LLM requests, whose throughput
is the endpoint's (`bench/replicas.py` measures that). `--plot PNG` draws per-document time and peak
RSS against N from this report and those given with `--with`.
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


def settings(path: Path, work: Path, shard_size: int) -> dict:
    return {"work_dir": str(work), "data.format": "beir", "data.path": str(path), "data.collection": "synthetic",
            "queries.splits": ["test"], "queries.leakage_eval_splits": [], "queries.max_queries": 20,
            "retrieval.shard_size": shard_size}


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
cfg = RunConfig.load(None, json.loads(sys.argv[1]))
run_pipeline(cfg, ["mine_queries"], log_fn=lambda m: None)
t = time.perf_counter()
s = run_pipeline(cfg, ["retrieve"], sharded=False, log_fn=lambda m: None)
print("RESULT " + json.dumps({"wall_s": time.perf_counter() - t, "stats": s["stages"]["retrieve"]["stats"]}))
"""


def unsharded(sets: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", UNSHARDED, json.dumps(sets)], cwd=str(ROOT), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rss = RssSampler(proc.pid, include_root=True)
    out, err = proc.communicate()
    peak = rss.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"the unsharded run failed: {err[-3000:]}")
    res = json.loads(out.split("RESULT ", 1)[1])
    return {"wall_s": round(res["wall_s"], 2), "peak_rss_mb": peak, "stats": res["stats"]}


def on_cluster(sets: dict, engine: str, workers: int) -> dict:
    from flows.__main__ import get_flow
    from flows.runners import make_task_runner
    from grouprank.config import RunConfig
    from grouprank.executor import run_pipeline
    cfg = RunConfig.load(None, sets)
    run_pipeline(cfg, ["mine_queries"], log_fn=lambda m: None)  # upstream: not what is measured
    flow = get_flow("retrieve").with_options(task_runner=make_task_runner(engine, n_workers=workers))
    rss = RssSampler()
    t = time.perf_counter()
    summary = flow(config=cfg)
    wall = time.perf_counter() - t
    st = summary["stages"]["retrieve"]
    recs = [json.loads(p.read_text()) for p in (Path(sets["work_dir"]) / "_stages" / "retrieve.shards").rglob("*.json")]
    span = max(r["finished"] for r in recs) - min(r["started"] for r in recs)  # first shard start to last end
    return {"wall_s": round(wall, 2), "peak_rss_mb": rss.stop(), "shards": st.get("shards"),
            "merge_s": st.get("wall_s"), "shards_span_s": round(span, 2),
            "shard_s_sum": round(sum(r["wall_s"] for r in recs), 2)}


def plot(reports: list[dict], out: str) -> None:
    """Time per document and peak RSS against N, one line per engine and worker count."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    series: dict[str, dict[int, dict]] = {}
    for rep in reports:
        for p in rep["points"]:
            series.setdefault(f"{p['engine']} x{p['workers']}", {})[p["n_docs"]] = p
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for name, pts in sorted(series.items()):
        ns = sorted(pts)
        a.plot(ns, [pts[n]["per_item_s"] * 1000 for n in ns], marker="o", label=name)
        b.plot(ns, [pts[n]["peak_rss_mb"] / 1024 for n in ns], marker="o", label=name)
    for ax, yl in ((a, "retrieve wall time per document (ms)"), (b, "peak RSS (GiB)")):
        ax.set_xscale("log")
        ax.set_xlabel("documents (N)")
        ax.set_ylabel(yl)
        ax.grid(True, alpha=0.3)
    a.legend(fontsize=8)
    fig.suptitle("bench/scale.py: sharded retrieve, 2-core machine")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot: {out}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, action="append", help="corpus sizes (default 10000)")
    ap.add_argument("--workers", type=int, action="append", help="worker counts (default 1 and 2)")
    ap.add_argument("--engines", default="dask,ray")
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--scratch", default=str(ROOT / "grouprank_output" / "bench_scale"))
    ap.add_argument("--plot", default=None, help="also draw time per document and peak RSS against N to this PNG, "
                    "from this report and the ones given with --with")
    ap.add_argument("--with", dest="others", action="append", default=[], help="another scale report for the plot")
    args = ap.parse_args(argv)
    load0 = round(os.getloadavg()[0], 2)
    sizes, workers = args.n or [10000], args.workers or [1, 2]
    engines = [e for e in args.engines.split(",") if e]
    scratch = Path(args.scratch)
    import shutil
    points, identical = [], True
    for n in sizes:
        coll = synthetic_collection(n, scratch / f"synthetic_{n}")
        work = scratch / f"work_{n}"
        shutil.rmtree(work, ignore_errors=True)
        ref = unsharded(settings(coll, work / "unsharded", args.shard_size))
        ref_hash = hashes(work / "unsharded" / "retrieve")
        points.append({"n_docs": n, "engine": "unsharded", "workers": 1, "stage": "retrieve",
                       "wall_s": ref["wall_s"], "per_item_s": round(ref["wall_s"] / n, 6),
                       "peak_rss_mb": ref["peak_rss_mb"], "identical_to_unsharded": True})
        print(json.dumps(points[-1]), flush=True)
        for engine in engines:
            for w in workers:
                wd = work / f"{engine}_{w}"
                r = on_cluster(settings(coll, wd, args.shard_size), engine, w)
                same = hashes(wd / "retrieve") == ref_hash
                identical &= same
                points.append({"n_docs": n, "engine": engine, "workers": w, "stage": "retrieve",
                               "wall_s": r["wall_s"], "per_item_s": round(r["wall_s"] / n, 6),
                               "peak_rss_mb": r["peak_rss_mb"], "merge_s": r["merge_s"],
                               "shards_span_s": r["shards_span_s"], "shard_s_sum": r["shard_s_sum"],
                               "per_item_encode_s": round(r["shards_span_s"] / n, 6),
                               "shards": r["shards"], "identical_to_unsharded": same})
                print(json.dumps(points[-1]), flush=True)
                shutil.rmtree(wd / "indexes", ignore_errors=True)
    speedup, encode_speedup = {}, {}
    for engine in engines:  # at the largest N measured with 1 and with 2 workers
        both = [n for n in sizes if {1, 2} <= {p["workers"] for p in points if p["engine"] == engine and p["n_docs"] == n}]
        at = {p["workers"]: p for p in points if p["engine"] == engine and both and p["n_docs"] == max(both)}
        if both:
            speedup[engine] = round(at[1]["wall_s"] / at[2]["wall_s"], 3)
            encode_speedup[engine] = round(at[1]["shards_span_s"] / at[2]["shards_span_s"], 3)
    report = {"speedup": speedup, "encode_speedup": encode_speedup, "identical_to_unsharded": identical,
              "points": points,
              "settings": {"sizes": sizes, "workers": workers, "shard_size": args.shard_size,
                           "words_per_document": WINDOW,
                           "stage": "retrieve (the judge's shards are LLM requests: an endpoint's throughput, "
                                    "bench/replicas.py)",
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
