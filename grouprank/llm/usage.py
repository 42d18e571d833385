"""Token, call and cost accounting: one `UsageBook` per client, and the process-wide `usage_report()`.

Counters per tag (a request's `tag`, e.g. a judge id):
  requests, ok, failed          requests finished (each exactly once)
  calls                         HTTP requests sent; cached_calls: answered without one
  answers                       HTTP answers received (calls that did not fail in transport)
  parse_failures                answers refused: failed validation, or cut at max_tokens
  retries, parse_retries        transport retries; answers asked again after failing validation
  prompt_tokens, completion_tokens                paid (as reported by the endpoint)
  cached_prompt_tokens, cached_completion_tokens  not paid again (answers from the cache)
  backoff_s                     seconds slept before retries
  errors                        {kind: count} (http_429, timeout, connection, parse, ...)
Costs are derived at the endpoint's prices: cost_usd (paid tokens), saved_cost_usd (cached ones).
Rates (`rates`): parse_failure_rate = parse_failures / answers, retry_rate = (retries +
parse_retries) / calls (extra HTTP requests per request sent), failure_rate = failed / requests.
"""
from __future__ import annotations

import contextlib
import contextvars
import threading
import weakref
from collections import defaultdict
from typing import Any

COUNTERS = ("requests", "ok", "failed", "cached_calls", "calls", "answers", "parse_failures",
            "retries", "parse_retries",
            "prompt_tokens", "completion_tokens", "cached_prompt_tokens", "cached_completion_tokens",
            "backoff_s")


def new_counter() -> dict:
    d: dict[str, Any] = {k: 0 for k in COUNTERS}
    d["errors"] = defaultdict(int)
    return d


def cost(prompt_tokens: int, completion_tokens: int, endpoint) -> float:
    """USD at the endpoint's prices (per million tokens)."""
    return (prompt_tokens * float(endpoint.price_prompt_per_mtok)
            + completion_tokens * float(endpoint.price_completion_per_mtok)) / 1e6


def finish(d: dict, endpoint) -> dict:
    """A plain-dict copy of one counter with its costs."""
    out = {k: d[k] for k in COUNTERS}
    out["errors"] = dict(d["errors"])
    out["backoff_s"] = round(out["backoff_s"], 4)
    out["cost_usd"] = round(cost(d["prompt_tokens"], d["completion_tokens"], endpoint), 6)
    out["saved_cost_usd"] = round(cost(d["cached_prompt_tokens"], d["cached_completion_tokens"], endpoint), 6)
    out.update(rates(out))
    return out


def rates(d: dict) -> dict:
    """parse_failure_rate, retry_rate, failure_rate of a counter (0.0 when nothing was counted)."""
    def r(a, b):
        return round(a / b, 4) if b else 0.0
    return {"parse_failure_rate": r(d.get("parse_failures", 0), d.get("answers", 0)),
            "retry_rate": r(d.get("retries", 0) + d.get("parse_retries", 0), d.get("calls", 0)),
            "failure_rate": r(d.get("failed", 0), d.get("requests", 0))}


class UsageBook:
    """Thread-safe counters per tag."""

    def __init__(self):
        self._lock = threading.Lock()
        self._per_tag: dict[str, dict] = defaultdict(new_counter)

    def add(self, tag: str, **inc) -> None:
        """Add to counters of `tag`; `error=KIND` counts one error of that kind."""
        with self._lock:
            d = self._per_tag[tag]
            for k, v in inc.items():
                if k == "error":
                    d["errors"][v] += 1
                else:
                    d[k] += v

    def add_cached(self, per_tag: dict[str, list[int]]) -> None:
        """Book answers served from the cache: {tag: [count, prompt_tokens, completion_tokens]}."""
        with self._lock:
            for tag, (n, pt, ct) in per_tag.items():
                d = self._per_tag[tag]
                d["requests"] += n
                d["ok"] += n
                d["cached_calls"] += n
                d["cached_prompt_tokens"] += pt
                d["cached_completion_tokens"] += ct

    def totals(self, endpoint) -> tuple[dict, dict[str, dict]]:
        """(total, {tag: counter}), finished with costs at the endpoint's prices."""
        with self._lock:
            per_tag = {t: finish(d, endpoint) for t, d in self._per_tag.items()}
        total = new_counter()
        for d in per_tag.values():
            for k in COUNTERS:
                total[k] += d[k]
            for k, v in d["errors"].items():
                total["errors"][k] += v
        return finish(total, endpoint), per_tag


_REGISTRY_LOCK = threading.Lock()
_REGISTRY: "weakref.WeakSet" = weakref.WeakSet()


# the clients made while a stage runs (`collecting`): the executor reports their calls in the
# stage's record, so no layer recovers LLM counts from a stage's own stats
_COLLECTING: "contextvars.ContextVar[list | None]" = contextvars.ContextVar("grouprank_llm_clients", default=None)


def register(client) -> None:
    """Count a client (anything with `usage()`) in `usage_report()` while it is alive, and in the
    enclosing `collecting()` block's list."""
    with _REGISTRY_LOCK:
        _REGISTRY.add(client)
    made = _COLLECTING.get()
    if made is not None:
        made.append(client)


@contextlib.contextmanager
def collecting():
    """Yields the list of the LLM clients made inside the block (in this thread, or one started
    with a copy of its context)."""
    made: list = []
    token = _COLLECTING.set(made)
    try:
        yield made
    finally:
        _COLLECTING.reset(token)


def calls_of(clients) -> dict[str, int]:
    """{"calls": HTTP requests sent, "cached_calls": answers served from the cache} of `clients`."""
    out = {"calls": 0, "cached_calls": 0}
    for c in clients:
        u = c.usage()
        out["calls"] += int(u.get("calls", 0))
        out["cached_calls"] += int(u.get("cached_calls", 0))
    return out


def usage_report() -> dict:
    """Usage of every live LLMClient of this process, summed per (stage, judge): for stage
    reports (a client that was garbage-collected is no longer counted: keep it while reporting)."""
    agg: dict[str, dict] = {}
    with _REGISTRY_LOCK:
        clients = list(_REGISTRY)
    for c in clients:
        u = c.usage()
        k = f"{u['stage']}/{u['judge_id'] or u['endpoint']}"
        if k not in agg:
            agg[k] = {kk: u[kk] for kk in ("stage", "judge_id", "endpoint", "model")}
            agg[k].update({kk: 0 for kk in COUNTERS + ("cost_usd", "saved_cost_usd")})
        for kk in COUNTERS + ("cost_usd", "saved_cost_usd"):
            agg[k][kk] += u[kk]
    for v in agg.values():
        v.update(rates(v))
    return agg
