"""Retry policy: which failures of one HTTP attempt are retried, and how long to wait before the next.

- transport errors (HTTP 408/409/429/5xx, timeouts, connection errors, malformed / unreadable
  response bodies) are `Retryable`: retried up to `endpoint.max_retries` times with exponential
  backoff and full jitter (`backoff_base_s * 2**n`, capped at `backoff_max_s`); a `retry-after-ms`
  / `Retry-After` header, when present, is honoured (capped at `retry_after_max_s`);
- other HTTP errors (400, 401, 403, 404, 422 ...) are `Fatal`: they fail at once.
(Answers that fail validation are asked again by the client, `endpoint.parse_retries` times.)
"""
from __future__ import annotations

import asyncio
import json
import random
import re
import time
from email.utils import parsedate_to_datetime


class Retryable(Exception):
    """A failed attempt worth repeating; `kind` names it in the usage counters."""

    def __init__(self, kind: str, msg: str, retry_after: float | None = None):
        super().__init__(msg)
        self.kind, self.retry_after = kind, retry_after


class Fatal(Exception):
    """A failed attempt that repeating cannot fix (e.g. HTTP 400/401)."""

    def __init__(self, kind: str, msg: str):
        super().__init__(msg)
        self.kind = kind


def retry_after(headers) -> float | None:
    """Seconds a server asks us to wait (`retry-after-ms`, or `Retry-After` in seconds or as an
    HTTP date); None without a usable hint."""
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


def backoff_delay(n: int, hint: float | None, endpoint, rng: random.Random) -> float:
    """Seconds before retry `n` (0-based): full jitter, never less than a (capped) server hint."""
    base = float(getattr(endpoint, "backoff_base_s", 0.5))
    cap = float(getattr(endpoint, "backoff_max_s", 30.0))
    delay = rng.uniform(0, min(cap, base * (2 ** n)))
    if hint is not None:
        delay = max(delay, min(hint, float(getattr(endpoint, "retry_after_max_s", 120.0))))
    return delay


def connection_cause(exc: BaseException) -> BaseException | None:
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


def classify(exc: BaseException, timeout: float) -> Retryable | Fatal | None:
    """The policy's verdict on an exception raised by one attempt (the openai client's request
    or the decoding of its body); None: not an attempt failure (the caller records it as
    unexpected)."""
    import openai
    if isinstance(exc, asyncio.TimeoutError):
        return Retryable("timeout", f"no answer within {timeout:g}s")
    if isinstance(exc, openai.APITimeoutError):
        root = connection_cause(exc)  # httpx-aiohttp maps a refused connection to ConnectTimeout
        if root is not None:
            return Retryable("connection", f"connection error: {type(root).__name__}: {root}")
        return Retryable("timeout", f"no answer within {timeout:g}s")
    if isinstance(exc, openai.APIConnectionError):
        cause = connection_cause(exc) or exc.__cause__
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
        return Retryable("connection", f"connection error: {detail}")
    if isinstance(exc, openai.APIResponseValidationError):
        return Retryable("malformed_response", f"malformed response: {exc}")
    if isinstance(exc, openai.APIStatusError):
        code = exc.status_code
        msg = f"HTTP {code}: {exc.message}"
        if code in (408, 409, 429) or code >= 500:
            return Retryable(f"http_{code}", msg, retry_after(exc.response.headers))
        return Fatal(f"http_{code}", msg)
    if isinstance(exc, (json.JSONDecodeError, ValueError, TypeError, KeyError)):
        return Retryable("malformed_response", f"malformed response: {type(exc).__name__}: {exc}")
    return None


# how the client words a request that failed for the endpoint's sake (not for its answer):
# "<kind> after N attempts: ...", "http_4xx: HTTP ...", "circuit_open: ...", "unexpected error: ...",
# "client error: ..."; a judge may prefix it ("no valid score ...: <reason>")
_TRANSPORT_REASON = re.compile(r"(?:^|: )(?:(?:connection|timeout|http_\d{3}|malformed_response) after \d+ attempts"
                               r"|http_\d{3}: HTTP|circuit_open|preflight|unexpected error|client error)")


def transport_failure(error: str | None) -> str | None:
    """The kind of failure (e.g. "connection", "http_503", "circuit_open") when a failed request's
    reason is the endpoint's (connection, timeout, HTTP error, malformed body, open circuit); None
    when it is its answer's (unparsable, cut, missing documents)."""
    m = _TRANSPORT_REASON.search(error or "")
    if m is None:
        return None
    return m.group(0).lstrip(": ").split(" after ", 1)[0].split(":", 1)[0]
