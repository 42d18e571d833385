"""The guard of one endpoint (or one replica of it), per `LLMClient`: the preflight request, the circuit breaker (consecutive connection failures
or timeouts), the time budget (`time_budget_s`) and a progress line while requests are retried."""
from __future__ import annotations

import logging
import os
import time

from grouprank.errors import UserError

log = logging.getLogger("grouprank.llm")


class EndpointUnavailable(UserError):
    """The endpoint cannot serve this stage: the preflight request failed (unreachable, key
    rejected) or the circuit breaker opened after consecutive connection failures. The message
    names the endpoint and its (credential-free) URL, never the key."""


class KeyRejected(EndpointUnavailable):
    """The endpoint answered the preflight with HTTP 401/403: the key is wrong (for every replica)."""


class EndpointGuard:
    """`reason` is None until the breaker opens, then why; no request is sent after that."""

    def __init__(self, endpoint, where: str):
        self.endpoint, self.where = endpoint, where
        self.streak = 0                      # consecutive connection failures (no HTTP answer at all)
        self.streak_kinds: set[str] = set()
        self.reason: str | None = None
        self.pending = 0                     # requests of the current map not finished yet (for the retry ETA)
        self.retries: dict[str, int] = {}
        self.retry_logged = 0.0
        self.deadline: float | None = None   # time_budget_s: monotonic deadline, set on first use

    def note_transport(self, kind: str | None) -> None:
        """Circuit breaker bookkeeping: `kind` of a failed attempt ("connection" and "timeout" count:
        a hung endpoint costs `breaker_failures` timeouts, not timeout x retries per request), None
        for any HTTP answer (which closes the streak)."""
        if kind in ("connection", "timeout"):
            self.streak += 1
            self.streak_kinds.add(kind)
            n = int(getattr(self.endpoint, "breaker_failures", 0) or 0)
            if n and self.streak >= n and self.reason is None:
                what = " or ".join(sorted({"connection": "connection failures", "timeout": "timeouts"}[k]
                                          for k in self.streak_kinds))
                self.open(f"{self.streak} consecutive {what}")
        else:
            self.streak = 0
            self.streak_kinds = set()

    def note_retry(self, kind: str, left: float | None, slots: int | None = None) -> None:
        """While requests are being retried, a progress line at most every GROUPRANK_PROGRESS_EVERY_S
        (30 s): the retries so far by kind and the worst case for the requests still open (each may
        take every attempt's timeout plus its backoff), bounded by the time budget and the breaker;
        a rate-based ETA says nothing while answers do not come back. `slots`: requests on the wire
        at once over the live replicas (default: this endpoint's `max_concurrency`)."""
        self.retries[kind] = self.retries.get(kind, 0) + 1
        every = float(os.environ.get("GROUPRANK_PROGRESS_EVERY_S", 30.0))
        now = time.monotonic()
        if now - self.retry_logged < every:
            return
        self.retry_logged = now
        ep = self.endpoint
        attempts = max(0, int(ep.max_retries)) + 1
        per_request = attempts * float(ep.timeout_s) + attempts * float(getattr(ep, "backoff_max_s", 30.0))
        waves = -(-max(1, self.pending) // max(1, int(slots or ep.max_concurrency)))
        worst = waves * per_request
        bound = f"at most {worst:,.0f}s for the {self.pending} requests still open"
        if left is not None:
            bound += f" (time budget: {max(0.0, left):,.0f}s left)"
        n = int(getattr(ep, "breaker_failures", 0) or 0)
        if n:
            bound += f"; the breaker stops it after {max(0, n - self.streak)} more consecutive failures"
        log.info("%s: retrying (%s so far); %s", self.where,
                 ", ".join(f"{k} x{v}" for k, v in sorted(self.retries.items())), bound)

    def open(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            log.error("%s: circuit breaker open after %s; no further requests are sent", self.where, reason)

    def remaining(self) -> float | None:
        """Seconds left of `time_budget_s` (started at the first uncached request), None without one;
        opens the breaker when the budget is spent."""
        budget = getattr(self.endpoint, "time_budget_s", None)
        if not budget:
            return None
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + float(budget)
        left = self.deadline - now
        if left <= 0:
            self.open(f"its time budget of {float(budget):g}s (llm.endpoints[].time_budget_s) was spent")
        return left


async def preflight(ep, api_key: str, where: str, scrub) -> None:
    """One cheap request (GET <base_url>/models): raises EndpointUnavailable within
    `preflight_timeout_s` when the endpoint cannot be reached or rejects the key (HTTP 401/403).
    Any other HTTP answer (200, 404 for a server without /models, 5xx) counts as reachable.
    `scrub` removes the key from any text shown."""
    import httpx
    t = float(getattr(ep, "preflight_timeout_s", 5.0))
    url = ep.base_url.rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(t), trust_env=False) as http:
            r = await http.get(url, headers=headers)
    except httpx.TimeoutException as e:
        from .retry import connection_cause
        root = connection_cause(e)
        why = (f"connection failed ({type(root).__name__}: {root})" if root is not None
               else f"no answer within {t:g}s")
        raise EndpointUnavailable(f"{where} is unreachable: {scrub(why)} (preflight GET /models)") from None
    except (httpx.HTTPError, OSError) as e:
        from .retry import connection_cause
        root = connection_cause(e) or e
        raise EndpointUnavailable(f"{where} is unreachable: {scrub(f'{type(root).__name__}: {root}')} "
                                  "(preflight GET /models)") from None
    if r.status_code in (401, 403):
        raise KeyRejected(f"{where} rejects the API key (HTTP {r.status_code} to GET /models); "
                                  f"the key comes from ${ep.api_key_env} or the Prefect Secret block "
                                  f"api_key_secret") from None
    if r.status_code >= 500:
        log.warning("%s answered HTTP %d to the preflight GET /models; going on (requests are retried)",
                    where, r.status_code)
