"""Judge I/O throughput: the LLM client layer against the local OpenAI-compatible server.

    python bench/judge_io.py --latency-ms 100 --concurrency 64 --pairs 5000 --out judge_io.json

Starts `tests.support.fake_openai_server` in a subprocess with a fixed latency per request, then judges
`--pairs` (query, document) pairs pointwise (1 pair per call) through `LLMClient` twice:
  pass 1: every prompt goes over HTTP -> pairs_per_s, compared with
          ideal_pairs_per_s = concurrency / latency * pairs_per_call;
  pass 2: the same prompts again, all answered from the SQLite cache -> cached_pairs_per_s
          (best of --cached-repeats passes, each after gc.collect(); every pass's seconds are in
          cached_pass_s);
          cached_client_pairs_per_s: the same requests through LLMClient.map alone (no prompt
          building, no judgment rows), i.e. the client layer's own share.
--driver judge (the default when grouprank.judges.pointwise is importable) runs the real
PointwiseJudge (its prompt template, validation and JUDGMENTS rows) over a synthetic pool of
pairs/50 queries x 50 documents; --driver client sends pointwise-shaped LLMRequests through
LLMClient directly (the client layer alone; what this bench measured before the judges existed).
The JSON says which ran.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import setup, write_report  # noqa: E402  (bench/_common.py)

setup("judge_io")

from grouprank.config import LLMEndpoint  # noqa: E402
from grouprank.llm import LLMClient, LLMRequest, ParseError, extract_json, extract_tag  # noqa: E402
from tests.support.fake_openai_server import start_local_server  # noqa: E402

SYSTEM = ("You are a relevance judge. Rate how useful the document is for answering the query on a "
          "0-10 scale. Reply with <answer>{\"score\": N}</answer>.")


def _validate(text: str) -> int:
    obj = extract_json(extract_tag(text, "answer") or text, expect=dict)
    s = obj.get("score")
    if not isinstance(s, (int, float)) or not 0 <= s <= 10:
        raise ParseError(f"score missing or out of range: {s!r}")
    return int(s)


def pointwise_requests(n: int, run_id: str) -> list[LLMRequest]:
    reqs = []
    for i in range(n):
        q, d = i // 50, i % 50
        user = (f"Query: what is known about topic {q} ({run_id})?\n\n"
                f"Document:\n<document>\nPassage {d} about topic {q}: lorem ipsum dolor sit amet, "
                f"consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore.\n</document>")
        reqs.append(LLMRequest(messages=[{"role": "system", "content": SYSTEM},
                                         {"role": "user", "content": user}],
                               template_version="bench.pointwise@1", validate=_validate, tag="pointwise"))
    return reqs


def _proc_cpu(pid: int) -> float:
    """user+system CPU seconds of a process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _judge_runner(client, pairs: int, run_id: str):
    """The judges' PointwiseJudge over a synthetic pool: pairs/50 queries x 50 documents."""
    from grouprank.config import JudgeSpec
    from grouprank.judges.base import JudgePool
    from grouprank.judges.pointwise import PointwiseJudge

    queries, docs, pools = {}, {}, {}
    for i in range(pairs):
        q, d = f"q{i // 50}", f"d{i}"
        queries[q] = f"what is known about topic {i // 50} ({run_id})?"
        docs[d] = (f"Passage {i % 50} about topic {i // 50}: lorem ipsum dolor sit amet, consectetur "
                   f"adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.")
        pools.setdefault(q, []).append(d)
    judge = PointwiseJudge(JudgeSpec(id="pointwise", kind="pointwise"), client)
    pool = JudgePool(queries, docs, pools)
    return (lambda: [r["status"] == "ok" for r in judge.run(pool)]), (lambda: judge.plan(pool))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--latency-ms", type=float, default=100.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--pairs", type=int, default=5000)
    p.add_argument("--out", required=True)
    p.add_argument("--cache", default=None, help="cache file or folder (default: a fresh temporary one)")
    p.add_argument("--cache-mode", choices=("single_file", "per_writer"), default="single_file",
                   help="llm.cache_mode: one SQLite file, or one file per writer process in a folder")
    p.add_argument("--driver", choices=("auto", "judge", "client"), default="auto")
    p.add_argument("--cached-repeats", type=int, default=3, help="cached passes; the best one is reported")
    a = p.parse_args(argv)
    driver = a.driver
    if driver == "auto":
        try:
            import grouprank.judges.pointwise  # noqa: F401
            driver = "judge"
        except Exception:  # noqa: BLE001 - judges not built in this checkout
            driver = "client"

    pairs_per_call = 1
    ideal = a.concurrency / (a.latency_ms / 1000.0) * pairs_per_call
    tmp = tempfile.TemporaryDirectory(prefix="judge_io_")
    cache = a.cache or os.path.join(tmp.name, "cache.sqlite" if a.cache_mode == "single_file" else "cache.d")
    run_id = str(time.time_ns())
    responder = "score_json" if driver == "judge" else "labels"
    with start_local_server(responder, latency_ms=a.latency_ms) as srv:
        ep = LLMEndpoint(name="bench", base_url=srv.base_url, model="local", max_concurrency=a.concurrency,
                         timeout_s=30.0, max_retries=3)
        client = LLMClient(ep, cache, stage="bench", judge_id="pointwise", cache_mode=a.cache_mode)
        if driver == "judge":
            run, plan = _judge_runner(client, a.pairs, run_id)
            warm = _judge_runner(client, min(a.concurrency, 64), "warmup")[0]
        else:
            reqs = pointwise_requests(a.pairs, run_id=run_id)
            run = lambda: [r.ok for r in client.map(reqs)]  # noqa: E731
            plan = lambda: reqs  # noqa: E731
            warm = lambda: client.map(pointwise_requests(min(a.concurrency, 64), run_id="warmup"))  # noqa: E731
        warm()  # imports, connection pool: outside the measured set
        srv.reset()
        s_cpu0, c_cpu0 = _proc_cpu(srv.pid), time.process_time()
        t0 = time.perf_counter()
        oks = run()
        t_live = time.perf_counter() - t0
        c_cpu, s_cpu = time.process_time() - c_cpu0, _proc_cpu(srv.pid) - s_cpu0
        stats_live = srv.stats(detail=False)
        srv.reset()
        t_cached_all, cpu_cached = [], []
        for _ in range(max(1, a.cached_repeats)):
            gc.collect()  # a full collection left pending would land in a ~0.2 s pass (~0.1 s here)
            c0, t0 = time.process_time(), time.perf_counter()
            oks2 = run()
            t_cached_all.append(time.perf_counter() - t0)
            cpu_cached.append(time.process_time() - c0)
            if len(t_cached_all) == 1:
                usage = client.usage()  # live pass + first cached pass (the counts below)
        t_cached = min(t_cached_all)
        reqs_planned = plan()
        t_client_all = []
        for _ in range(max(1, a.cached_repeats)):
            gc.collect()
            t0 = time.perf_counter()
            client.map(reqs_planned)
            t_client_all.append(time.perf_counter() - t0)
        stats_cached = srv.stats(detail=False)
        client.close()
    ok = sum(oks)
    out = {
        "ideal_pairs_per_s": round(ideal, 2),
        "pairs_per_s": round(a.pairs / t_live, 2),
        "ratio": round(a.pairs / t_live / ideal, 4),
        "cached_pairs_per_s": round(a.pairs / t_cached, 2),
        "cached_client_pairs_per_s": round(a.pairs / min(t_client_all), 2),
        "pairs": a.pairs, "concurrency": a.concurrency, "latency_ms": a.latency_ms, "cache_mode": a.cache_mode,
        "pairs_per_call": pairs_per_call,
        "driver": "judges.pointwise.PointwiseJudge" if driver == "judge" else "llm_client_pointwise_shaped",
        "live_seconds": round(t_live, 3), "cached_seconds": round(t_cached, 4),
        "cached_pass_s": [round(t, 4) for t in t_cached_all],
        "cached_client_pass_s": [round(t, 4) for t in t_client_all],
        "cached_cpu_ms_per_pair": round(min(cpu_cached) / a.pairs * 1000, 4),
        "ok": ok, "failed": len(oks) - ok, "ok_cached_pass": sum(oks2),
        "cached_hits": usage["cached_calls"], "calls": usage["calls"],
        "server_requests_live": stats_live["requests"], "server_requests_cached_pass": stats_cached["requests"],
        "server_max_in_flight": stats_live["max_in_flight"],
        # CPU seconds per pair on the live pass: with a 2-core machine shared by other jobs the
        # wall-clock rate is bounded by the CPU share we get; these say what it would need
        "client_cpu_ms_per_pair": round(c_cpu / a.pairs * 1000, 4),
        "server_cpu_ms_per_pair": round(s_cpu / a.pairs * 1000, 4),
    }
    write_report(a.out, out)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
