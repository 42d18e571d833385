"""`LLMClient`: bounded-concurrency, retrying, caching, accounting chat-completion client.

See the package docstring (grouprank/llm/__init__.py) for the overview; the parts live next door:
`keys` (cache keys), `cache` (the SQLite answer cache), `transport` (connection pools, one HTTP
attempt), `retry` (which failures are retried, backoff), `guard` (preflight, circuit breaker, time
budget), `usage` (accounting), `estimate` (dry run).

Per request: the cache first; else attempts over HTTP until an answer passes the request's
`validate` (a retryable ParseError is asked once more: `endpoint.parse_retries`, default 1) or
the retry policy gives up. An answer cut by max_tokens (finish_reason "length") is refused
whatever the validator would make of it, unless the validator declares `accepts_truncated` (its
format proves completeness, e.g. a closing tag), and asked once more like a parse failure. The concurrency slot is held only while a request is on the wire, not during
backoff.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

from pydantic import SecretStr

from grouprank.errors import UserError

from . import transport
from .cache import CachedAnswer
from .guard import EndpointGuard, EndpointUnavailable
from .keys import request_hash
from .replicas import Replica, ReplicaSet, endpoint_urls
from .retry import Fatal, Retryable, backoff_delay
from .shared_cache import open_cache
from .types import LLMRequest, LLMResult, ParseError
from .usage import UsageBook, register

log = logging.getLogger("grouprank.llm")


class _Truncated(ParseError):
    """An answer cut at max_tokens (finish_reason "length")."""

_PLACEHOLDER_KEY = "no-key"  # local servers need none; the openai client refuses an empty key


def accepts_truncated(validate) -> bool:
    """Whether a validator declares that an answer it accepts is complete even when the model went
    on until max_tokens (e.g. the groupwise parser, which needs the closing </answer> tag)."""
    return bool(getattr(validate, "accepts_truncated", False))


class LLMClient:
    """Chat-completion client for one endpoint, or its replicas (see module docstring).

    endpoint    grouprank.config.LLMEndpoint (`replicas`: several servers, `grouprank.llm.replicas`)
    cache_path  the answer cache (None: no cache): a SQLite file (cache_mode "single_file") or a
                folder of per-writer files ("per_writer"); None: a folder that exists is
                per_writer (`shared_cache.open_cache`)
    stage       stage name for accounting (e.g. "judges")
    judge_id    judge name for accounting
    api_key     explicit key (e.g. a Prefect Secret's value); default: env var endpoint.api_key_env
    """

    def __init__(self, endpoint, cache_path: str | Path | None = None, stage: str = "default",
                 judge_id: str | None = None, *, api_key: str | None = None,
                 cache_mode: str | None = None):
        if not endpoint.base_url and getattr(endpoint, "managed", None):
            from .managed import resolve_managed
            endpoint = resolve_managed(endpoint, Path(cache_path).parent if cache_path else None)
        if not endpoint_urls(endpoint):
            raise UserError(f"LLM endpoint {endpoint.name!r} has no base_url (and no replicas or managed model)")
        self.endpoint = endpoint
        self.stage = stage
        self.judge_id = judge_id
        key = api_key if api_key is not None else os.environ.get(endpoint.api_key_env or "", "")
        if hasattr(key, "get_secret_value"):  # a pydantic SecretStr (e.g. from a Prefect Secret)
            key = key.get_secret_value()
        key = key or ""
        if not key:
            log.debug("no API key in $%s for endpoint %r: sending a placeholder", endpoint.api_key_env,
                      endpoint.name)
        self.__key = SecretStr(key or _PLACEHOLDER_KEY)  # repr shows '**********'
        self._secrets = [SecretStr(s) for s in {key, key.strip()} if s and len(s) >= 4]
        self.cache = open_cache(cache_path, cache_mode) if cache_path else None
        self._book = UsageBook()
        self._rng = random.Random()
        self._preflight_done = False
        self._guard = EndpointGuard(endpoint, self._where())  # circuit breaker, time budget, retry progress
        self._replicas = ReplicaSet(endpoint, self._guard)  # one per URL; one URL: its guard is _guard
        register(self)

    # ------------------------------------------------------------------ public helpers
    def __repr__(self) -> str:  # never shows the key
        ep = self.endpoint
        where = f"replicas={ep.replicas!r}" if getattr(ep, "replicas", None) else f"base_url={ep.base_url!r}"
        return (f"LLMClient(endpoint={ep.name!r}, {where}, "
                f"model={self.endpoint.model!r}, stage={self.stage!r}, judge_id={self.judge_id!r})")

    def request_hash(self, req: LLMRequest) -> str:
        return request_hash(req, self.endpoint)

    def scrub(self, text: str) -> str:
        """Remove the API key (and any bearer token) from a message before it is recorded."""
        if not text:
            return text
        for s in self._secrets:
            text = text.replace(s.get_secret_value(), "***")
        return re.sub(r"(?i)(bearer\s+)[^\s'\",}]+", r"\1***", text)

    def usage(self) -> dict:
        """Totals and per-tag breakdown: requests, ok, failed, calls (HTTP requests sent),
        cached_calls, retries, parse_retries, errors (by kind), prompt/completion tokens (paid),
        cached_* tokens (not paid again), cost_usd, saved_cost_usd."""
        out, per_tag = self._book.totals(self.endpoint)
        out.update(stage=self.stage, judge_id=self.judge_id, endpoint=self.endpoint.name,
                   model=self.endpoint.model,
                   prices={"prompt_per_mtok": self.endpoint.price_prompt_per_mtok,
                           "completion_per_mtok": self.endpoint.price_completion_per_mtok},
                   per_tag=per_tag)
        if len(self._replicas) > 1:
            out["replicas"] = self._replicas.usage()
        return out

    # ------------------------------------------------------------------ loop-bound state
    async def aclose(self) -> None:
        await self._replicas.aclose()

    def close(self) -> None:
        """Close the cache connection (and forget the HTTP clients)."""
        self._replicas.forget_pools()
        if self.cache is not None:
            self.cache.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ preflight, circuit breaker
    def _where(self) -> str:
        ep = self.endpoint
        if getattr(ep, "replicas", None):
            n = len(ep.replicas)
            return f"LLM endpoint {ep.name!r} ({n} replica{'s' if n > 1 else ''}: {', '.join(ep.replicas)})"
        return f"LLM endpoint {ep.name!r} ({ep.base_url})"

    async def apreflight(self) -> None:
        """One cheap request (GET <base_url>/models) before anything is spent: raises
        EndpointUnavailable within `preflight_timeout_s` when the endpoint cannot be reached or
        rejects the key (HTTP 401/403). Any other HTTP answer (200, 404 for a server without
        /models, 5xx) counts as reachable: the retry policy deals with the rest. Once per client;
        skipped for managed endpoints (health-checked when started) and with preflight=false.
        Replicas are checked together: one that cannot be reached is taken out (a warning), a
        rejected key or no replica reachable raises."""
        if self._preflight_done:
            return
        ep = self.endpoint
        if not getattr(ep, "preflight", True) or getattr(ep, "managed", None):
            self._preflight_done = True
            return
        await self._replicas.preflight(self.__key.get_secret_value(), self._where(), self.scrub)
        self._preflight_done = True

    # ------------------------------------------------------------------ one request
    async def acomplete(self, req: LLMRequest) -> LLMResult:
        """One request through the cache, retries and validation. Never raises for the request's
        own failures: a failure is LLMResult(status="failed", error=reason)."""
        key = self.request_hash(req)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                cached: dict[str, list[int]] = {}
                res = self._from_cache(req, key, hit, cached)
                if res is not None:
                    self._book.add_cached(cached)
                    return res
        await self.apreflight()
        return await self._complete_uncached(req, key)

    @staticmethod
    def _from_cache(req: LLMRequest, key: str, hit: CachedAnswer, cached: dict[str, list[int]]) -> LLMResult | None:
        """The result for a cache hit (None when today's validator rejects the stored answer: ask
        again); its usage is summed into `cached` ({tag: [count, prompt, completion tokens]})."""
        parsed = None
        if hit.finish_reason == "length" and not accepts_truncated(req.validate):
            return None  # stored before cut answers were refused: ask again
        if req.validate is not None:
            try:
                parsed = req.validate(hit.text)
            except Exception:  # noqa: BLE001 - validator changed since: ask again
                return None
        a = cached.get(req.tag)
        if a is None:
            a = cached[req.tag] = [0, 0, 0]
        a[0] += 1
        a[1] += hit.prompt_tokens
        a[2] += hit.completion_tokens
        return LLMResult(text=hit.text, parsed=parsed, status="ok", error=None, request_hash=key,
                         prompt_tokens=hit.prompt_tokens, completion_tokens=hit.completion_tokens,
                         cached=True, attempts=0, finish_reason=hit.finish_reason, tag=req.tag,
                         meta=req.meta, logprobs=hit.logprobs)

    async def _complete_uncached(self, req: LLMRequest, key: str) -> LLMResult:
        t0 = time.perf_counter()
        acct = self._book.add
        try:
            body = transport.request_body(req, self.endpoint)
        except Exception as e:  # noqa: BLE001 - bad request / client setup: record, don't raise
            return self._failed(req, key, f"client error: {type(e).__name__}: {e}", "client_error", 0, 0, 0, t0)
        ep = self.endpoint
        timeout = float(ep.timeout_s)
        max_retries = max(0, int(ep.max_retries))
        parse_retries = max(0, int(getattr(ep, "parse_retries", 1)))
        attempts = 0
        transport_retries = 0
        parse_failures = 0
        pt_total = ct_total = 0
        last_text: str | None = None
        avoid: Replica | None = None  # the replica whose attempt just failed: the retry goes elsewhere
        while True:
            left = self._guard.remaining()
            rep = self._replicas.pick(avoid) if self._guard.reason is None else None
            if rep is None:  # the time budget is spent, or every replica is out
                self._guard.open(self._replicas.all_out_reason())
                return self._failed(req, key, f"circuit_open: {self._guard.reason} at {ep.name!r}; not sent",
                                    "circuit_open", attempts, pt_total, ct_total, t0, last_text)
            attempts += 1
            try:
                text, finish, pt, ct, lps = await self._replicas.send(
                    rep, self.__key.get_secret_value(), body,
                    timeout if left is None else max(0.05, min(timeout, left)))
            except Retryable as e:
                acct(req.tag, calls=1, error=e.kind)
                self._note(rep, e.kind)
                avoid = rep
                if transport_retries >= max_retries:
                    return self._failed(req, key, f"{e.kind} after {attempts} attempts: {e}", None,
                                        attempts, pt_total, ct_total, t0, last_text)
                transport_retries += 1
                await self._back_off(req, key, e, transport_retries)
                continue
            except Fatal as e:
                acct(req.tag, calls=1, error=e.kind)
                self._note(rep, None)
                return self._failed(req, key, f"{e.kind}: {e}", None, attempts, pt_total, ct_total, t0,
                                    last_text)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - anything unexpected is recorded, not raised
                acct(req.tag, calls=1, error="unexpected")
                return self._failed(req, key, f"unexpected error: {type(e).__name__}: {e}", None,
                                    attempts, pt_total, ct_total, t0, last_text)
            acct(req.tag, calls=1, answers=1, prompt_tokens=pt, completion_tokens=ct)
            self._note(rep, None)
            text = self._unechoed(text)
            pt_total += pt
            ct_total += ct
            last_text = text
            # ---- validate
            try:
                parsed = self._validated(req, text, finish, body)
            except ParseError as e:
                acct(req.tag, parse_failures=1, error="truncated" if isinstance(e, _Truncated) else "parse")
                if e.retryable and parse_failures < parse_retries:
                    parse_failures += 1
                    acct(req.tag, parse_retries=1)
                    log.debug("answer rejected for %s, asking again: %s", key[:12], self.scrub(str(e)))
                    continue
                return self._failed(req, key, f"parse: {e} (after {parse_failures + 1} answers)", None,
                                    attempts, pt_total, ct_total, t0, text, finish, lps)
            except Exception as e:  # noqa: BLE001 - a crashing validator is a failed answer
                acct(req.tag, error="validator_error")
                return self._failed(req, key, f"validator error: {type(e).__name__}: {e}", None,
                                    attempts, pt_total, ct_total, t0, text)
            self._commit(req, key, text, pt, ct, finish, lps)  # now, before anything else can go wrong
            return LLMResult(text=text, parsed=parsed, status="ok", error=None, request_hash=key,
                             prompt_tokens=pt_total, completion_tokens=ct_total, cached=False,
                             attempts=attempts, finish_reason=finish,
                             latency_s=time.perf_counter() - t0, tag=req.tag, meta=req.meta, logprobs=lps)

    @staticmethod
    def _validated(req: LLMRequest, text: str | None, finish: str | None, body: dict):
        """The parsed answer, or ParseError: empty, cut at max_tokens (whatever a validator would read
        in it, half a query, a score without its closing brace, is not the answer the model meant:
        asked once more), or refused by the request's validator."""
        if text is None:
            raise ParseError("empty answer (no message content)")
        if finish == "length" and not accepts_truncated(req.validate):
            raise _Truncated(f"answer cut at max_tokens={body.get('max_tokens')} (finish_reason=length)")
        return req.validate(text) if req.validate is not None else None

    def _note(self, rep: Replica, kind: str | None) -> None:
        """Breaker bookkeeping of one attempt on `rep`; the client's breaker opens once every replica is out."""
        all_out = self._replicas.note(rep, kind)
        if all_out is not None:
            self._guard.open(all_out)

    async def _back_off(self, req: LLMRequest, key: str, e: Retryable, n: int) -> None:
        """Wait before retry `n` of a transport failure (backoff, Retry-After, never past the budget)."""
        delay = backoff_delay(n - 1, e.retry_after, self.endpoint, self._rng)
        left = self._guard.remaining()
        if left is not None:
            delay = max(0.0, min(delay, left))
        self._book.add(req.tag, retries=1, backoff_s=delay)
        self._guard.note_retry(e.kind, left, self._replicas.slots())
        log.debug("retry %d for %s in %.2fs (%s)", n, key[:12], delay, self.scrub(str(e)))
        await asyncio.sleep(delay)

    def _unechoed(self, text: str | None) -> str | None:
        """An endpoint echoing the key must not plant it in the cache."""
        for sec in self._secrets if text else ():
            text = text.replace(sec.get_secret_value(), "***")
        return text

    def _commit(self, req: LLMRequest, key: str, text: str, pt: int, ct: int, finish, lps) -> None:
        """A valid answer: into the cache (a cache write error must not lose it) and the accounts."""
        if self.cache is not None:
            try:
                self.cache.put(key, text, pt, ct, finish, model=self.endpoint.model,
                               template_version=req.template_version, tag=req.tag, logprobs=lps)
            except Exception as e:  # noqa: BLE001
                log.warning("cache write failed for %s: %s", key[:12], self.scrub(str(e)))
        self._book.add(req.tag, requests=1, ok=1)

    def _failed(self, req, key, reason, kind, attempts, pt, ct, t0, text=None, finish=None,
                logprobs=None) -> LLMResult:
        reason = self.scrub(reason)
        if len(reason) > 2000:
            reason = reason[:2000] + "…"
        if kind:
            self._book.add(req.tag, error=kind)
        self._book.add(req.tag, requests=1, failed=1)
        log.warning("LLM request %s failed (%s): %s", key[:12], req.tag or "-", reason)
        return LLMResult(text=self.scrub(text) if text else None, parsed=None, status="failed",
                         error=reason, request_hash=key, prompt_tokens=pt, completion_tokens=ct,
                         cached=False, attempts=attempts, finish_reason=finish,
                         latency_s=time.perf_counter() - t0, tag=req.tag, meta=req.meta, logprobs=logprobs)

    # ------------------------------------------------------------------ many requests
    async def amap(self, reqs: Sequence[LLMRequest],
                   progress: Callable[[int, int], None] | None = None) -> list[LLMResult]:
        """All requests, bounded concurrency, results in input order; never raises for a single
        request (a failed one is LLMResult(status="failed")), but raises EndpointUnavailable when the
        endpoint is gone: the preflight before the first uncached request failed, or the circuit
        breaker opened (`breaker_failures` consecutive connection failures).
        Cache lookups are batched; identical requests in one batch are sent once."""
        reqs = list(reqs)
        n = len(reqs)
        results: list[LLMResult | None] = [None] * n
        ep = self.endpoint
        keys = [request_hash(r, ep) for r in reqs]
        done = 0
        hits = self.cache.get_many(keys) if self.cache is not None and n else {}
        todo: dict[str, list[int]] = {}
        if hits:
            cached: dict[str, list[int]] = {}
            from_cache = self._from_cache
            for i, k in enumerate(keys):
                h = hits.get(k)
                res = from_cache(reqs[i], k, h, cached) if h is not None else None
                if res is not None:
                    results[i] = res
                    done += 1
                else:
                    todo.setdefault(k, []).append(i)
            self._book.add_cached(cached)
        else:
            for i, k in enumerate(keys):
                todo.setdefault(k, []).append(i)

        def report(k: int) -> None:
            if progress is not None:
                try:
                    progress(k, n)
                except Exception as e:  # noqa: BLE001 - a progress bar must not lose answers
                    log.debug("progress callback failed: %s", self.scrub(str(e)))

        if done:
            report(done)
        if todo:
            await self.apreflight()  # raises EndpointUnavailable before anything is spent
            groups = list(todo.values())
            it = iter(groups)

            self._guard.pending = len(groups)

            async def worker():
                nonlocal done
                for idx in it:
                    first = idx[0]
                    res = await self._complete_uncached(reqs[first], keys[first])
                    self._guard.pending -= 1
                    results[first] = res
                    for j in idx[1:]:  # duplicates in the batch: same answer, counted as cached
                        results[j] = self._dup(reqs[j], res)
                    done += len(idx)
                    report(done)

            nworkers = min(len(groups), max(1, int(ep.max_concurrency)) * 2 * len(self._replicas))
            await asyncio.gather(*(worker() for _ in range(nworkers)))
            if self._guard.reason is not None:
                ok = sum(1 for r in results if r is not None and r.ok)
                raise EndpointUnavailable(
                    f"{self._where()}: stopped after {self._guard.reason} ({ok} of {n} requests answered, "
                    f"{n - ok} failed; the answers received are cached: rerun the same command to resume, "
                    "it sends only the rest)")
        return results  # type: ignore[return-value]

    def _dup(self, req: LLMRequest, res: LLMResult) -> LLMResult:
        parsed = res.parsed
        if res.ok and req.validate is not None and res.text is not None:
            try:
                parsed = req.validate(res.text)
            except Exception:  # noqa: BLE001
                parsed = res.parsed
        self._book.add(req.tag, requests=1, ok=int(res.ok), failed=int(not res.ok), cached_calls=int(res.ok))
        return LLMResult(text=res.text, parsed=parsed, status=res.status, error=res.error,
                         request_hash=res.request_hash, prompt_tokens=res.prompt_tokens,
                         completion_tokens=res.completion_tokens, cached=res.ok, attempts=0,
                         finish_reason=res.finish_reason, tag=req.tag, meta=req.meta, logprobs=res.logprobs)

    def map(self, reqs: Sequence[LLMRequest],
            progress: Callable[[int, int], None] | None = None) -> list[LLMResult]:
        """Synchronous `amap`. Inside a running event loop it runs in a worker thread."""
        async def run():
            try:
                return await self.amap(reqs, progress)
            finally:
                await self.aclose()

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is None:
            return asyncio.run(run())
        with ThreadPoolExecutor(1, thread_name_prefix="grouprank-llm") as ex:
            return ex.submit(asyncio.run, run()).result()

    def complete(self, req: LLMRequest) -> LLMResult:
        return self.map([req])[0]
