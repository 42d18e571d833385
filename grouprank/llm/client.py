"""`LLMClient`: bounded-concurrency, retrying, caching, accounting chat-completion client.

See the package docstring (grouprank/llm/__init__.py) for the overview. Retry policy:

- transport errors (HTTP 408/409/429/5xx, timeouts, connection errors, malformed / unreadable
  response bodies) are retried up to `endpoint.max_retries` times with exponential backoff and
  full jitter (`backoff_base_s * 2**n`, capped at `backoff_max_s`); a `retry-after-ms` /
  `Retry-After` header, when present, is honoured (capped at `retry_after_max_s`);
- other HTTP errors (400, 401, 403, 404, 422 ...) fail at once;
- an answer the request's `validate` rejects with a retryable ParseError (or one cut by
  max_tokens, finish_reason="length", when there is no validator) is asked once more
  (`endpoint.parse_retries`, default 1), then recorded as failed;
- the concurrency slot is held only while a request is on the wire, not during backoff.

The openai client's own retries are off (max_retries=0) so that every attempt is counted here.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
import weakref
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Callable, Sequence

from pydantic import SecretStr

from .cache import LLMCache
from .types import LLMRequest, LLMResult, ParseError

log = logging.getLogger("grouprank.llm")

_PLACEHOLDER_KEY = "no-key"  # local servers need none; the openai client refuses an empty key


# --------------------------------------------------------------------------------------------
# hashing
# --------------------------------------------------------------------------------------------
def _num(x: Any) -> Any:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x


def sampling_params(req: LLMRequest, endpoint) -> dict:
    """The effective sampling parameters of a request (request overrides > endpoint)."""
    return {
        "temperature": _num(endpoint.temperature if req.temperature is None else req.temperature),
        "top_p": _num(endpoint.top_p if req.top_p is None else req.top_p),
        "max_tokens": int(endpoint.max_tokens if req.max_tokens is None else req.max_tokens),
        "seed": req.seed,
    }


_HASH_VERSION = b"grouprank.llm.request/1"
# canonical header bytes per (endpoint, sampling, template, schema object). A response_schema is
# treated as immutable once used in a request (templates keep theirs as module constants).
_HEADER_CACHE: dict[tuple, tuple[Any, bytes]] = {}


def _canon(v: Any) -> bytes:
    return json.dumps(v, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


def request_hash(req: LLMRequest, endpoint) -> str:
    """sha256 over (base_url, model, messages, sampling params, response_schema, template_version).
    The API key is not part of it (the same prompt to the same endpoint is the same answer).

    Encoding: a canonical JSON header (everything but the messages), then each message's fields
    in sorted key order, length-prefixed; string values as UTF-8, others as canonical JSON. (Long
    prompt strings are hashed without a JSON escaping pass: several times faster.)"""
    sp = sampling_params(req, endpoint)
    schema = req.response_schema
    ck = ((endpoint.base_url or "").rstrip("/"), endpoint.model, sp["temperature"], sp["top_p"],
          sp["max_tokens"], sp["seed"], req.template_version, id(schema))
    hit = _HEADER_CACHE.get(ck)
    if hit is not None and hit[0] is schema:
        hb = hit[1]
    else:
        hb = _canon({"base_url": ck[0], "model": ck[1], "sampling": sp, "response_schema": schema,
                     "template_version": req.template_version})
        if len(_HEADER_CACHE) > 1024:
            _HEADER_CACHE.clear()
        _HEADER_CACHE[ck] = (schema, hb)  # holds the schema: its id cannot be reused meanwhile
    msgs = req.messages
    parts = [_HASH_VERSION, len(hb).to_bytes(8, "big"), hb, len(msgs).to_bytes(8, "big")]
    add = parts.append
    for m in msgs:
        add(len(m).to_bytes(8, "big"))
        for k in sorted(m):
            v = m[k]
            kb = str(k).encode("utf-8")
            if isinstance(v, str):
                vb, t = v.encode("utf-8", "surrogatepass"), b"s"
            else:
                vb, t = _canon(v), b"j"
            add(len(kb).to_bytes(8, "big"))
            add(kb)
            add(t)
            add(len(vb).to_bytes(8, "big"))
            add(vb)
    return hashlib.sha256(b"".join(parts)).hexdigest()


# --------------------------------------------------------------------------------------------
# accounting
# --------------------------------------------------------------------------------------------
_COUNTERS = ("requests", "ok", "failed", "cached_calls", "calls", "retries", "parse_retries",
             "prompt_tokens", "completion_tokens", "cached_prompt_tokens", "cached_completion_tokens",
             "backoff_s")


def _new_counter() -> dict:
    d: dict[str, Any] = {k: 0 for k in _COUNTERS}
    d["errors"] = defaultdict(int)
    return d


def _cost(prompt_tokens: int, completion_tokens: int, endpoint) -> float:
    return (prompt_tokens * float(endpoint.price_prompt_per_mtok)
            + completion_tokens * float(endpoint.price_completion_per_mtok)) / 1e6


def _finish(d: dict, endpoint) -> dict:
    out = {k: d[k] for k in _COUNTERS}
    out["errors"] = dict(d["errors"])
    out["backoff_s"] = round(out["backoff_s"], 4)
    out["cost_usd"] = round(_cost(d["prompt_tokens"], d["completion_tokens"], endpoint), 6)
    out["saved_cost_usd"] = round(_cost(d["cached_prompt_tokens"], d["cached_completion_tokens"],
                                        endpoint), 6)
    return out


_REGISTRY_LOCK = threading.Lock()
_REGISTRY: "weakref.WeakSet[LLMClient]" = weakref.WeakSet()


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
            agg[k].update({kk: 0 for kk in _COUNTERS + ("cost_usd", "saved_cost_usd")})
        for kk in _COUNTERS + ("cost_usd", "saved_cost_usd"):
            agg[k][kk] += u[kk]
    return agg


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
class _Retryable(Exception):
    def __init__(self, kind: str, msg: str, retry_after: float | None = None):
        super().__init__(msg)
        self.kind, self.retry_after = kind, retry_after


class _Fatal(Exception):
    def __init__(self, kind: str, msg: str):
        super().__init__(msg)
        self.kind = kind


def _retry_after(headers) -> float | None:
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        ra = headers.get("retry-after")
        if ra is None:
            return None
        try:
            return max(0.0, float(ra))
        except ValueError:
            dt = parsedate_to_datetime(ra)
            return max(0.0, dt.timestamp() - time.time())
    except Exception:  # noqa: BLE001 - a bad header just means "no hint"
        return None


if hasattr(asyncio, "timeout"):  # 3.11+: a cheap context manager, no extra task per call
    _deadline = asyncio.timeout
else:  # pragma: no cover - Python 3.10: the HTTP client's own (per-read) timeout only
    import contextlib

    def _deadline(seconds: float):
        return contextlib.nullcontext()


def _connection_cause(exc: BaseException) -> BaseException | None:
    """The underlying connection failure (refused, reset, unreachable) behind a timeout-typed
    exception, if any."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and not isinstance(e, TimeoutError):
            return e
        if type(e).__name__ in ("ClientConnectorError", "ClientConnectorDNSError", "ServerDisconnectedError"):
            return e
        e = e.__cause__ or e.__context__
    return None


@dataclass
class _LoopState:
    loop: asyncio.AbstractEventLoop
    clients: list  # AsyncOpenAI shards, each with its own small connection pool
    sem: asyncio.Semaphore
    rr: int = 0

    def next_client(self):
        self.rr += 1
        return self.clients[self.rr % len(self.clients)]


# httpcore's pool does O(requests x connections) work per event; past a few dozen connections
# in one pool that dominates the CPU. Without the aiohttp transport, several small pools keep
# it linear.
_CONNS_PER_POOL = 8


def _aiohttp_client_class():
    """openai.DefaultAioHttpClient when the `openai[aiohttp]` extra (httpx-aiohttp) is installed
    and not disabled with GROUPRANK_LLM_HTTPX=1; it costs a fraction of httpcore's CPU per call."""
    if os.environ.get("GROUPRANK_LLM_HTTPX", "") not in ("", "0"):
        return None
    try:
        import httpx_aiohttp  # noqa: F401
        from openai import DefaultAioHttpClient
    except ImportError:
        return None
    return DefaultAioHttpClient


# --------------------------------------------------------------------------------------------
# the client
# --------------------------------------------------------------------------------------------
class LLMClient:
    """Chat-completion client for one endpoint (see module docstring).

    endpoint    grouprank.config.LLMEndpoint
    cache_path  SQLite cache file (None: no cache)
    stage       stage name for accounting (e.g. "judges")
    judge_id    judge name for accounting
    api_key     explicit key (e.g. a Prefect Secret's value); default: env var endpoint.api_key_env
    """

    def __init__(self, endpoint, cache_path: str | Path | None = None, stage: str = "default",
                 judge_id: str | None = None, *, api_key: str | None = None):
        if not endpoint.base_url:
            from grouprank.errors import UserError
            raise UserError(f"LLM endpoint {endpoint.name!r} has no base_url")
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
        self.cache: LLMCache | None = LLMCache(cache_path) if cache_path else None
        self._state: _LoopState | None = None
        self._state_lock = threading.Lock()
        self._acct_lock = threading.Lock()
        self._usage: dict[str, dict] = defaultdict(_new_counter)
        self._rng = random.Random()
        with _REGISTRY_LOCK:
            _REGISTRY.add(self)

    # ------------------------------------------------------------------ public helpers
    def __repr__(self) -> str:  # never shows the key
        return (f"LLMClient(endpoint={self.endpoint.name!r}, base_url={self.endpoint.base_url!r}, "
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
        with self._acct_lock:
            per_tag = {t: _finish(d, self.endpoint) for t, d in self._usage.items()}
        total = _new_counter()
        for t, d in per_tag.items():
            for k in _COUNTERS:
                total[k] += d[k]
            for k, v in d["errors"].items():
                total["errors"][k] += v
        out = _finish(total, self.endpoint)
        out.update(stage=self.stage, judge_id=self.judge_id, endpoint=self.endpoint.name,
                   model=self.endpoint.model,
                   prices={"prompt_per_mtok": self.endpoint.price_prompt_per_mtok,
                           "completion_per_mtok": self.endpoint.price_completion_per_mtok},
                   per_tag=per_tag)
        return out

    def _acct(self, tag: str, **inc) -> None:
        with self._acct_lock:
            d = self._usage[tag]
            for k, v in inc.items():
                if k == "error":
                    d["errors"][v] += 1
                else:
                    d[k] += v

    # ------------------------------------------------------------------ loop-bound state
    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        st = self._state
        if st is not None and st.loop is loop:
            return st
        with self._state_lock:
            st = self._state
            if st is not None and st.loop is loop:
                return st
            import httpx
            from openai import AsyncOpenAI
            n = max(1, int(self.endpoint.max_concurrency))
            timeout = httpx.Timeout(self.endpoint.timeout_s, connect=min(10.0, self.endpoint.timeout_s))
            aio = _aiohttp_client_class()
            if aio is not None:  # openai's own aiohttp transport (openai[aiohttp]): one pool is fine
                shards, per = 1, n
            else:
                shards = max(1, -(-n // _CONNS_PER_POOL))
                per = -(-n // shards)
            clients = []
            for _ in range(shards):
                limits = httpx.Limits(max_connections=per + 2, max_keepalive_connections=per + 2)
                http = (aio or httpx.AsyncClient)(limits=limits, timeout=timeout)
                clients.append(AsyncOpenAI(base_url=self.endpoint.base_url, api_key=self.__key.get_secret_value(),
                                           max_retries=0, timeout=self.endpoint.timeout_s, http_client=http))
            self._state = st = _LoopState(loop, clients, asyncio.Semaphore(n))
            return st

    async def aclose(self) -> None:
        st = self._state
        self._state = None
        if st is not None and st.loop is asyncio.get_running_loop():
            for c in st.clients:
                try:
                    await c.close()
                except Exception:  # noqa: BLE001
                    pass

    def close(self) -> None:
        """Close the cache connection (and forget the HTTP client)."""
        self._state = None
        if self.cache is not None:
            self.cache.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ one request
    def _body(self, req: LLMRequest) -> dict:
        sp = sampling_params(req, self.endpoint)
        body: dict[str, Any] = {"model": self.endpoint.model, "messages": req.messages,
                                "temperature": sp["temperature"], "top_p": sp["top_p"],
                                "max_tokens": sp["max_tokens"]}
        if sp["seed"] is not None:
            body["seed"] = sp["seed"]
        if req.response_schema is not None and self.endpoint.json_schema:
            name = re.sub(r"[^A-Za-z0-9_-]", "_", str(req.response_schema.get("title", "answer")))[:64]
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": name or "answer",
                                                       "schema": req.response_schema}}
        return body

    async def _send(self, st: _LoopState, body: dict) -> tuple[str | None, str | None, int, int]:
        """One HTTP attempt. Returns (text, finish_reason, prompt_tokens, completion_tokens) or
        raises _Retryable / _Fatal."""
        import httpx
        import openai
        timeout = float(self.endpoint.timeout_s)
        try:
            async with st.sem:
                # httpx enforces the read timeout per chunk; `deadline` bounds the whole call.
                # `post` is the openai client's documented raw-request method: the same URL, auth,
                # headers and error mapping as chat.completions.create, without its per-call
                # TypedDict transform and model construction (a large share of the CPU per call).
                async with _deadline(timeout + 1.0):
                    raw = await st.next_client().post(
                        "/chat/completions", body=body, cast_to=httpx.Response,
                        options={"timeout": timeout})
            data = json.loads(raw.content)
        except asyncio.TimeoutError:
            raise _Retryable("timeout", f"no answer within {timeout:g}s") from None
        except openai.APITimeoutError as e:
            root = _connection_cause(e)  # httpx-aiohttp maps a refused connection to ConnectTimeout
            if root is not None:
                raise _Retryable("connection", f"connection error: {type(root).__name__}: {root}") from None
            raise _Retryable("timeout", f"no answer within {timeout:g}s") from None
        except openai.APIConnectionError as e:
            cause = _connection_cause(e) or e.__cause__
            detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(e)
            raise _Retryable("connection", f"connection error: {detail}") from None
        except openai.APIResponseValidationError as e:
            raise _Retryable("malformed_response", f"malformed response: {e}") from None
        except openai.APIStatusError as e:
            code = e.status_code
            msg = f"HTTP {code}: {e.message}"
            if code in (408, 409, 429) or code >= 500:
                raise _Retryable(f"http_{code}", msg, _retry_after(e.response.headers)) from None
            raise _Fatal(f"http_{code}", msg) from None
        except (json.JSONDecodeError, ValueError, TypeError, KeyError) as e:
            raise _Retryable("malformed_response", f"malformed response: {type(e).__name__}: {e}") from None
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content")
            if text is not None and not isinstance(text, str):
                raise TypeError(f"message content is {type(text).__name__}")
            finish = choice.get("finish_reason")
            u = data.get("usage") or {}
            pt = int(u.get("prompt_tokens") or 0)
            ct = int(u.get("completion_tokens") or 0)
        except (AttributeError, IndexError, TypeError, ValueError, KeyError) as e:
            raise _Retryable("malformed_response", f"malformed response: {type(e).__name__}: {e}") from None
        return text, finish, pt, ct

    def _backoff(self, n: int, hint: float | None) -> float:
        ep = self.endpoint
        base = float(getattr(ep, "backoff_base_s", 0.5))
        cap = float(getattr(ep, "backoff_max_s", 30.0))
        delay = self._rng.uniform(0, min(cap, base * (2 ** n)))  # full jitter
        if hint is not None:
            delay = max(delay, min(hint, float(getattr(ep, "retry_after_max_s", 120.0))))
        return delay

    async def acomplete(self, req: LLMRequest) -> LLMResult:
        """One request through the cache, retries and validation. Never raises for the request's
        own failures: a failure is LLMResult(status="failed", error=reason)."""
        key = self.request_hash(req)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                res = self._from_cache(req, key, hit)
                if res is not None:
                    return res
        return await self._complete_uncached(req, key)

    def _from_cache(self, req: LLMRequest, key: str, hit, acct: dict | None = None) -> LLMResult | None:
        parsed = None
        if req.validate is not None:
            try:
                parsed = req.validate(hit.text)
            except Exception:  # noqa: BLE001 - validator changed since: ask again
                return None
        if acct is None:
            self._acct(req.tag, requests=1, ok=1, cached_calls=1, cached_prompt_tokens=hit.prompt_tokens,
                       cached_completion_tokens=hit.completion_tokens)
        else:  # amap: summed per tag, booked once
            a = acct.get(req.tag)
            if a is None:
                a = acct[req.tag] = [0, 0, 0]
            a[0] += 1
            a[1] += hit.prompt_tokens
            a[2] += hit.completion_tokens
        return LLMResult(text=hit.text, parsed=parsed, status="ok", error=None, request_hash=key,
                         prompt_tokens=hit.prompt_tokens, completion_tokens=hit.completion_tokens,
                         cached=True, attempts=0, finish_reason=hit.finish_reason, tag=req.tag,
                         meta=req.meta)

    async def _complete_uncached(self, req: LLMRequest, key: str) -> LLMResult:
        t0 = time.perf_counter()
        try:
            st = self._loop_state()
            body = self._body(req)
        except Exception as e:  # noqa: BLE001 - bad request / client setup: record, don't raise
            return self._failed(req, key, f"client error: {type(e).__name__}: {e}", "client_error", 0, 0, 0, t0)
        ep = self.endpoint
        max_retries = max(0, int(ep.max_retries))
        parse_retries = max(0, int(getattr(ep, "parse_retries", 1)))
        attempts = 0
        transport_retries = 0
        parse_failures = 0
        pt_total = ct_total = 0
        last_text: str | None = None
        while True:
            attempts += 1
            try:
                text, finish, pt, ct = await self._send(st, body)
            except _Retryable as e:
                self._acct(req.tag, calls=1, error=e.kind)
                if transport_retries >= max_retries:
                    return self._failed(req, key, f"{e.kind} after {attempts} attempts: {e}", None,
                                        attempts, pt_total, ct_total, t0, last_text)
                delay = self._backoff(transport_retries, e.retry_after)
                transport_retries += 1
                self._acct(req.tag, retries=1, backoff_s=delay)
                log.debug("retry %d for %s in %.2fs (%s)", transport_retries, key[:12], delay,
                          self.scrub(str(e)))
                await asyncio.sleep(delay)
                continue
            except _Fatal as e:
                self._acct(req.tag, calls=1, error=e.kind)
                return self._failed(req, key, f"{e.kind}: {e}", None, attempts, pt_total, ct_total, t0,
                                    last_text)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - anything unexpected is recorded, not raised
                self._acct(req.tag, calls=1, error="unexpected")
                return self._failed(req, key, f"unexpected error: {type(e).__name__}: {e}", None,
                                    attempts, pt_total, ct_total, t0, last_text)
            self._acct(req.tag, calls=1, prompt_tokens=pt, completion_tokens=ct)
            if text and self._secrets:  # an endpoint echoing the key must not plant it in the cache
                for sec in self._secrets:
                    if sec.get_secret_value() in text:
                        text = text.replace(sec.get_secret_value(), "***")
            pt_total += pt
            ct_total += ct
            last_text = text
            # ---- validate
            try:
                if text is None:
                    raise ParseError("empty answer (no message content)")
                if req.validate is not None:
                    parsed = req.validate(text)
                else:
                    if finish == "length":
                        raise ParseError("answer cut at max_tokens (finish_reason=length)")
                    parsed = None
            except ParseError as e:
                self._acct(req.tag, error="parse")
                if e.retryable and parse_failures < parse_retries:
                    parse_failures += 1
                    self._acct(req.tag, parse_retries=1)
                    log.debug("answer rejected for %s, asking again: %s", key[:12], self.scrub(str(e)))
                    continue
                return self._failed(req, key, f"parse: {e} (after {parse_failures + 1} answers)", None,
                                    attempts, pt_total, ct_total, t0, text)
            except Exception as e:  # noqa: BLE001 - a crashing validator is a failed answer
                self._acct(req.tag, error="validator_error")
                return self._failed(req, key, f"validator error: {type(e).__name__}: {e}", None,
                                    attempts, pt_total, ct_total, t0, text)
            # ---- success: commit now, before anything else can go wrong
            if self.cache is not None:
                try:
                    self.cache.put(key, text, pt, ct, finish, model=ep.model,
                                   template_version=req.template_version, tag=req.tag)
                except Exception as e:  # noqa: BLE001 - a cache write error must not lose the answer
                    log.warning("cache write failed for %s: %s", key[:12], self.scrub(str(e)))
            self._acct(req.tag, requests=1, ok=1)
            return LLMResult(text=text, parsed=parsed, status="ok", error=None, request_hash=key,
                             prompt_tokens=pt_total, completion_tokens=ct_total, cached=False,
                             attempts=attempts, finish_reason=finish,
                             latency_s=time.perf_counter() - t0, tag=req.tag, meta=req.meta)

    def _failed(self, req, key, reason, kind, attempts, pt, ct, t0, text=None) -> LLMResult:
        reason = self.scrub(reason)
        if len(reason) > 2000:
            reason = reason[:2000] + "…"
        if kind:
            self._acct(req.tag, error=kind)
        self._acct(req.tag, requests=1, failed=1)
        log.warning("LLM request %s failed (%s): %s", key[:12], req.tag or "-", reason)
        return LLMResult(text=self.scrub(text) if text else None, parsed=None, status="failed",
                         error=reason, request_hash=key, prompt_tokens=pt, completion_tokens=ct,
                         cached=False, attempts=attempts, latency_s=time.perf_counter() - t0,
                         tag=req.tag, meta=req.meta)

    # ------------------------------------------------------------------ many requests
    async def amap(self, reqs: Sequence[LLMRequest],
                   progress: Callable[[int, int], None] | None = None) -> list[LLMResult]:
        """All requests, bounded concurrency, results in input order; never raises for a single
        request. Cache lookups are batched; identical requests in one batch are sent once."""
        reqs = list(reqs)
        n = len(reqs)
        results: list[LLMResult | None] = [None] * n
        keys = [self.request_hash(r) for r in reqs]
        done = 0
        hits = self.cache.get_many(keys) if self.cache is not None and n else {}
        todo: dict[str, list[int]] = {}
        acct: dict[str, list[int]] = {}
        for i, (r, k) in enumerate(zip(reqs, keys)):
            h = hits.get(k)
            res = self._from_cache(r, k, h, acct) if h is not None else None
            if res is not None:
                results[i] = res
                done += 1
            else:
                todo.setdefault(k, []).append(i)
        for tag, (cnt, pt, ct) in acct.items():
            self._acct(tag, requests=cnt, ok=cnt, cached_calls=cnt, cached_prompt_tokens=pt,
                       cached_completion_tokens=ct)

        def report(k: int) -> None:
            if progress is not None:
                try:
                    progress(k, n)
                except Exception as e:  # noqa: BLE001 - a progress bar must not lose answers
                    log.debug("progress callback failed: %s", self.scrub(str(e)))

        if done:
            report(done)
        if todo:
            groups = list(todo.values())
            it = iter(groups)

            async def worker():
                nonlocal done
                for idx in it:
                    first = idx[0]
                    res = await self._complete_uncached(reqs[first], keys[first])
                    results[first] = res
                    for j in idx[1:]:  # duplicates in the batch: same answer, counted as cached
                        results[j] = self._dup(reqs[j], res)
                    done += len(idx)
                    report(done)

            nworkers = min(len(groups), max(1, int(self.endpoint.max_concurrency)) * 2)
            await asyncio.gather(*(worker() for _ in range(nworkers)))
        return results  # type: ignore[return-value]

    def _dup(self, req: LLMRequest, res: LLMResult) -> LLMResult:
        parsed = res.parsed
        if res.ok and req.validate is not None and res.text is not None:
            try:
                parsed = req.validate(res.text)
            except Exception:  # noqa: BLE001
                parsed = res.parsed
        self._acct(req.tag, requests=1, ok=int(res.ok), failed=int(not res.ok), cached_calls=int(res.ok))
        return LLMResult(text=res.text, parsed=parsed, status=res.status, error=res.error,
                         request_hash=res.request_hash, prompt_tokens=res.prompt_tokens,
                         completion_tokens=res.completion_tokens, cached=res.ok, attempts=0,
                         finish_reason=res.finish_reason, tag=req.tag, meta=req.meta)

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


# --------------------------------------------------------------------------------------------
# dry run
# --------------------------------------------------------------------------------------------
def _token_counter(tokenizer=None) -> tuple[Callable[[str], int], str]:
    if tokenizer is not None:
        if callable(tokenizer) and not hasattr(tokenizer, "encode"):
            return tokenizer, getattr(tokenizer, "__name__", "custom")
        return (lambda s: len(tokenizer.encode(s))), type(tokenizer).__name__
    try:
        import tiktoken
        enc = tiktoken.get_encoding("o200k_base")
        return (lambda s: len(enc.encode(s, disallowed_special=()))), "tiktoken:o200k_base"
    except Exception:  # noqa: BLE001 - not installed or no offline encoding file
        return (lambda s: (len(s) + 3) // 4), "chars/4"


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multi-part content
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def estimate(reqs: Sequence[LLMRequest], endpoint, tokenizer=None, *,
             cache_path: str | Path | None = None,
             completion_tokens_per_call: int | None = None) -> dict:
    """Dry run: nothing is sent. Counts calls and prompt tokens (tiktoken o200k_base when it is
    installed, else characters/4: the `tokenizer` field says which; or pass `tokenizer`, an object
    with .encode or a callable str -> int), and the cost at the endpoint's prices. Completion
    tokens are an upper bound (max_tokens per call) unless `completion_tokens_per_call` is given.
    With `cache_path`, calls already answered in the cache are counted apart (they cost nothing)."""
    count, name = _token_counter(tokenizer)
    keys = [request_hash(r, endpoint) for r in reqs]
    cached: set[str] = set()
    if cache_path is not None and Path(cache_path).exists():
        c = LLMCache(cache_path)
        try:
            cached = set(c.get_many(keys))
        finally:
            c.close()
    seen: set[str] = set()
    calls = prompt_tokens = completion_tokens = 0
    per_tag: dict[str, dict] = defaultdict(lambda: {"calls": 0, "prompt_tokens": 0})
    for r, k in zip(reqs, keys):
        if k in cached or k in seen:
            continue
        seen.add(k)
        pt = 3 + sum(4 + count(_content_text(m.get("content"))) for m in r.messages)
        ct = (completion_tokens_per_call if completion_tokens_per_call is not None
              else sampling_params(r, endpoint)["max_tokens"])
        calls += 1
        prompt_tokens += pt
        completion_tokens += ct
        per_tag[r.tag]["calls"] += 1
        per_tag[r.tag]["prompt_tokens"] += pt
    return {
        "requests": len(reqs),
        "calls": calls,
        "cached": sum(1 for k in set(keys) if k in cached),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "completion_tokens_is_upper_bound": completion_tokens_per_call is None,
        "est_cost_usd": round(_cost(prompt_tokens, completion_tokens, endpoint), 6),
        "tokenizer": name,
        "endpoint": endpoint.name,
        "model": endpoint.model,
        "per_tag": dict(per_tag),
    }
