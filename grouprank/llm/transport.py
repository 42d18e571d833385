"""HTTP transport: the request body, per-event-loop connection pools, and one attempt.

`openai.AsyncOpenAI` clients (their own retries off, max_retries=0, so that every attempt is
counted by the caller) are bound to the event loop that made them: `LoopPools.open` makes them for
the running loop, `send` makes one attempt and raises `retry.Retryable` / `retry.Fatal`.
openai and httpx are imported on first use, never at import time.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from .keys import sampling_params
from .retry import Retryable, classify
from .types import LLMRequest

# httpcore's pool does O(requests x connections) work per event; past a few dozen connections
# in one pool that dominates the CPU. Without the aiohttp transport, several small pools keep
# it linear.
CONNS_PER_POOL = 8

if hasattr(asyncio, "timeout"):  # 3.11+: a cheap context manager, no extra task per call
    _deadline = asyncio.timeout
else:  # pragma: no cover - Python 3.10: the HTTP client's own (per-read) timeout only
    import contextlib

    def _deadline(seconds: float):
        return contextlib.nullcontext()


def aiohttp_client_class():
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


def request_body(req: LLMRequest, endpoint) -> dict:
    """The chat-completions JSON body of a request."""
    sp = sampling_params(req, endpoint)
    body: dict[str, Any] = {"model": endpoint.model, "messages": req.messages,
                            "temperature": sp["temperature"], "top_p": sp["top_p"],
                            "max_tokens": sp["max_tokens"]}
    if sp["seed"] is not None:
        body["seed"] = sp["seed"]
    if req.top_logprobs and getattr(endpoint, "logprobs", True):
        body["logprobs"] = True
        body["top_logprobs"] = int(req.top_logprobs)
    if req.response_schema is not None and endpoint.json_schema == "json_object":
        body["response_format"] = {"type": "json_object", "schema": req.response_schema}
    elif req.response_schema is not None and endpoint.json_schema:
        name = re.sub(r"[^A-Za-z0-9_-]", "_", str(req.response_schema.get("title", "answer")))[:64]
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": name or "answer", "schema": req.response_schema}}
    return body


@dataclass
class LoopPools:
    """The HTTP clients of one event loop and the semaphore bounding requests on the wire."""
    loop: asyncio.AbstractEventLoop
    clients: list  # AsyncOpenAI shards, each with its own small connection pool
    sem: asyncio.Semaphore
    rr: int = 0

    @classmethod
    def open(cls, endpoint, api_key: str, loop: asyncio.AbstractEventLoop) -> "LoopPools":
        import httpx
        from openai import AsyncOpenAI
        n = max(1, int(endpoint.max_concurrency))
        timeout = httpx.Timeout(endpoint.timeout_s, connect=min(10.0, endpoint.timeout_s))
        aio = aiohttp_client_class()
        if aio is not None:  # openai's own aiohttp transport (openai[aiohttp]): one pool is fine
            shards, per = 1, n
        else:
            shards = max(1, -(-n // CONNS_PER_POOL))
            per = -(-n // shards)
        clients = []
        for _ in range(shards):
            limits = httpx.Limits(max_connections=per + 2, max_keepalive_connections=per + 2)
            http = (aio or httpx.AsyncClient)(limits=limits, timeout=timeout)
            clients.append(AsyncOpenAI(base_url=endpoint.base_url, api_key=api_key, max_retries=0,
                                       timeout=endpoint.timeout_s, http_client=http))
        return cls(loop, clients, asyncio.Semaphore(n))

    def next_client(self):
        self.rr += 1
        return self.clients[self.rr % len(self.clients)]

    async def close(self) -> None:
        for c in self.clients:
            try:
                await c.close()
            except Exception:  # noqa: BLE001
                pass


def compact_logprobs(choice: dict) -> list | None:
    """`choices[0].logprobs.content` of a chat completion as ``[[token, logprob, [[alt, logprob],
    ...]], ...]`` (None when absent or not in the OpenAI shape)."""
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if not isinstance(content, list):
        return None
    out = []
    for t in content:
        if not isinstance(t, dict) or not isinstance(t.get("token"), str):
            return None
        alts = [[a["token"], float(a["logprob"])] for a in (t.get("top_logprobs") or [])
                if isinstance(a, dict) and isinstance(a.get("token"), str)
                and isinstance(a.get("logprob"), (int, float))]
        try:
            out.append([t["token"], float(t.get("logprob")), alts])
        except (TypeError, ValueError):
            return None
    return out


async def send(pools: LoopPools, body: dict, timeout: float) -> tuple[str | None, str | None, int, int, list | None]:
    """One HTTP attempt. Returns (text, finish_reason, prompt_tokens, completion_tokens, logprobs)
    or raises Retryable / Fatal (see `retry.classify`); anything else is unexpected. `logprobs`
    is `compact_logprobs` of the answer when the body asked for them, else None."""
    import httpx
    try:
        async with pools.sem:
            # httpx enforces the read timeout per chunk; `deadline` bounds the whole call.
            # `post` is the openai client's documented raw-request method: the same URL, auth,
            # headers and error mapping as chat.completions.create, without its per-call
            # TypedDict transform and model construction (a large share of the CPU per call).
            async with _deadline(timeout + 1.0):
                raw = await pools.next_client().post(
                    "/chat/completions", body=body, cast_to=httpx.Response, options={"timeout": timeout})
        data = json.loads(raw.content)
    except Exception as e:  # noqa: BLE001 - classified below; CancelledError is not an Exception
        verdict = classify(e, timeout)
        if verdict is None:
            raise
        raise verdict from None
    try:
        choice = data["choices"][0]
        text = choice["message"].get("content")
        if text is not None and not isinstance(text, str):
            raise TypeError(f"message content is {type(text).__name__}")
        finish = choice.get("finish_reason")
        u = data.get("usage") or {}
        pt = int(u.get("prompt_tokens") or 0)
        ct = int(u.get("completion_tokens") or 0)
        lps = compact_logprobs(choice) if body.get("logprobs") else None
    except (AttributeError, IndexError, TypeError, ValueError, KeyError) as e:
        raise Retryable("malformed_response", f"malformed response: {type(e).__name__}: {e}") from None
    return text, finish, pt, ct, lps
