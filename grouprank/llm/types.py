"""Request/result types of the LLM client layer (no heavy imports: safe to import anywhere)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal


class ParseError(Exception):
    """Raised by a request's `validate` callable (or the parsing helpers) when an answer is bad
    or incomplete. `retryable=True` (the default) makes the client send the request once more;
    after that the result is recorded as failed with this message as the reason."""

    def __init__(self, msg: str, retryable: bool = True):
        super().__init__(msg)
        self.retryable = retryable


@dataclass
class LLMRequest:
    """One chat completion request.

    messages          OpenAI chat messages [{"role": ..., "content": ...}, ...]
    template_version  prompt template id@version, e.g. "judge.pointwise@1" (part of the cache key)
    response_schema   JSON schema of the answer; sent as a response_format only when the endpoint
                      has `json_schema` set (true or "json_object"); always part of the cache key
    validate          parse + validate the answer text -> parsed value (stored in LLMResult.parsed);
                      raise ParseError on a bad/incomplete answer: one retry, then status "failed"
    temperature/top_p/max_tokens/seed   per-request overrides of the endpoint's sampling params
    top_logprobs      ask for this many alternatives per generated token (sent only when the
                      endpoint has `logprobs=True`; part of the cache key when set); they come
                      back in LLMResult.logprobs
    tag               stage label for accounting (usage() is broken down per tag)
    meta              free for the caller (e.g. query/doc ids); not sent, not hashed
    """

    messages: list[dict]
    template_version: str
    response_schema: dict | None = None
    validate: Callable[[str], Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    top_logprobs: int | None = None
    tag: str = ""
    meta: Any = field(default=None, compare=False)


@dataclass
class LLMResult:
    """Outcome of one request. Never raised: a failure is status="failed" with `error` (reason,
    API key scrubbed). `attempts` counts HTTP requests sent for it (0 when served from cache).
    `logprobs`: when the request asked for top_logprobs and the endpoint returned them, one entry
    per generated token, ``[token, logprob, [[alternative, logprob], ...]]`` (also from the cache)."""

    text: str | None
    parsed: Any
    status: Literal["ok", "failed"]
    error: str | None
    request_hash: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    attempts: int = 0
    finish_reason: str | None = None
    latency_s: float = 0.0
    tag: str = ""
    meta: Any = field(default=None, compare=False, repr=False)
    logprobs: list | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"
