"""Several replicas of one judge model: throughput with 2 replicas vs 1 at the same per-replica concurrency.

    python bench/replicas.py --latency-ms 250 --concurrency 8 --requests 960 --out bench/results/replicas.json

Starts two `tests.support.fake_openai_server` processes with a fixed latency per request and sends
`--requests` distinct pointwise-shaped requests through `LLMClient` on an endpoint with
`replicas: [A]` and then `replicas: [A, B]`, `max_concurrency` = `--concurrency` per replica, no
cache; each configuration runs `--repeats` times, interleaved, and the best pass counts.
  requests_per_s.one / .two, speedup = two / one (target >= 1.8), ideal_per_s = replicas x
  concurrency / latency, the requests each replica answered in the two-replica pass, and the
  client's CPU per request (with short latencies on a loaded 2-core machine the client and the two
  server processes run out of CPU before the replicas run out of slots: 100 ms gave 1.3x at a
  load average of 6, 250 ms gives the replicas' own scaling).
Then the failure pass: two replicas, A answers `--kill-after` requests and holds the rest, is killed
(SIGKILL) with requests in flight; `killed_run` counts requests lost (not answered ok) and prompts
answered more than once over both servers (both must be 0).
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from _common import setup, write_report  # noqa: E402  (bench/_common.py)

setup("replicas")

from grouprank.config import LLMEndpoint  # noqa: E402
from grouprank.llm import LLMClient, LLMRequest  # noqa: E402
from tests.support.fake_openai_server import prompt_hash, start_local_server  # noqa: E402


def requests(n: int, run_id: str) -> list[LLMRequest]:
    return [LLMRequest(messages=[{"role": "system", "content": "Rate the document for the query, 0-10."},
                                 {"role": "user", "content": f"Query {i // 50} ({run_id}). Document {i}: lorem ipsum "
                                                             "dolor sit amet, consectetur adipiscing elit."}],
                       template_version="bench.replicas@1", tag="pointwise") for i in range(n)]


def endpoint(urls: list[str], concurrency: int) -> LLMEndpoint:
    return LLMEndpoint(name="bench", replicas=urls, model="local", max_concurrency=concurrency, timeout_s=30.0,
                       max_retries=5, backoff_base_s=0.05, backoff_max_s=0.5, breaker_failures=3)


def timed_pass(urls: list[str], a, run_id: str) -> tuple[float, dict]:
    client = LLMClient(endpoint(urls, a.concurrency), stage="bench")
    client.map(requests(2 * a.concurrency * len(urls), f"warm-{run_id}"))  # connections, imports
    reqs = requests(a.requests, run_id)
    c0, t0 = time.process_time(), time.perf_counter()
    res = client.map(reqs)
    dt = time.perf_counter() - t0
    assert all(r.ok for r in res), [r.error for r in res if not r.ok][:3]
    usage = client.usage()
    usage["client_cpu_ms_per_request"] = round((time.process_time() - c0) / len(reqs) * 1000, 3)
    client.close()
    return dt, usage


def killed_run(a) -> dict:
    n = a.requests // 2
    with start_local_server("echo", latency_ms=a.latency_ms) as sa, start_local_server("echo", latency_ms=a.latency_ms) as sb:
        sa.control(hold_after_ok=a.kill_after)
        client = LLMClient(endpoint([sa.base_url, sb.base_url], a.concurrency), stage="bench")
        reqs = requests(n, f"kill-{time.time_ns()}")
        out: dict = {}
        t = threading.Thread(target=lambda: out.setdefault("res", client.map(reqs)))
        t0 = time.perf_counter()
        t.start()
        while time.perf_counter() - t0 < 60:
            st = sa.stats(detail=False)
            if st["ok"] >= a.kill_after and st["in_flight"] >= 1:
                break
            time.sleep(0.02)
        st_a = sa.stats()
        sa.proc.kill()
        sa.proc.wait()
        t.join()
        dt = time.perf_counter() - t0
        st_b = sb.stats()
        usage = client.usage()
        client.close()
    answered = {prompt_hash(r.messages): 0 for r in reqs}
    for st in (st_a, st_b):
        for h, c in st["per_prompt"].items():
            answered[h] = answered.get(h, 0) + c["ok"]
    res = out["res"]
    return {"requests": n, "killed_after_answers": st_a["ok"], "in_flight_when_killed": st_a["in_flight"],
            "lost": sum(not r.ok for r in res), "answered_more_than_once": sum(v > 1 for v in answered.values()),
            "never_answered": sum(v == 0 for v in answered.values()), "seconds": round(dt, 3),
            "replicas": usage["replicas"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--latency-ms", type=float, default=250.0)
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight per replica")
    p.add_argument("--requests", type=int, default=960)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--kill-after", type=int, default=50)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    best = {"one": float("inf"), "two": float("inf")}
    per_replica, cpu = None, {}
    with start_local_server("echo", latency_ms=a.latency_ms) as sa, start_local_server("echo", latency_ms=a.latency_ms) as sb:
        for rep in range(a.repeats):
            for label, urls in (("one", [sa.base_url]), ("two", [sa.base_url, sb.base_url])):
                dt, usage = timed_pass(urls, a, f"{label}-{rep}-{time.time_ns()}")
                print(f"{label} replica(s), pass {rep + 1}: {a.requests / dt:.1f} requests/s", file=sys.stderr)
                if dt < best[label]:
                    best[label] = dt
                    cpu[label] = usage["client_cpu_ms_per_request"]
                    if label == "two":
                        per_replica = usage["replicas"]
    lat = a.latency_ms / 1000.0
    rate = {k: round(a.requests / v, 2) for k, v in best.items()}
    out = {
        "latency_ms": a.latency_ms, "concurrency_per_replica": a.concurrency, "requests": a.requests,
        "repeats": a.repeats,
        "requests_per_s": rate,
        "ideal_per_s": {"one": round(a.concurrency / lat, 2), "two": round(2 * a.concurrency / lat, 2)},
        "seconds": {k: round(v, 3) for k, v in best.items()},
        "speedup": round(rate["two"] / rate["one"], 3),
        "target_speedup": 1.8,
        "two_replicas_usage": per_replica,
        "client_cpu_ms_per_request": cpu,
        "killed_run": killed_run(a),
    }
    write_report(a.out, out)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
