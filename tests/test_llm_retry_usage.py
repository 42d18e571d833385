"""Retry policy (`grouprank.llm.retry`) and accounting (`grouprank.llm.usage`): pure units."""
import asyncio
import random
from types import SimpleNamespace as NS

import httpx
import openai
import pytest

from grouprank.llm.retry import Fatal, Retryable, backoff_delay, classify, retry_after
from grouprank.llm.usage import UsageBook

EP = NS(backoff_base_s=0.5, backoff_max_s=4.0, retry_after_max_s=10.0,
        price_prompt_per_mtok=2.0, price_completion_per_mtok=8.0)


def _status_error(code, headers=None):
    req = httpx.Request("POST", "http://x/v1/chat/completions")
    resp = httpx.Response(code, headers=headers or {}, request=req, json={"error": {"message": "m"}})
    return openai.APIStatusError("m", response=resp, body=None)


def test_retry_after_headers():
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"retry-after": "-5"}) == 0.0
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert retry_after({"retry-after": "soon"}) is None and retry_after({}) is None and retry_after(None) is None


def test_backoff_full_jitter_capped_and_hint_honoured():
    rng = random.Random(0)
    d = [backoff_delay(n, None, EP, rng) for n in range(8) for _ in range(200)]
    assert all(0 <= x <= 4.0 for x in d) and max(d) > 3.0          # capped at backoff_max_s
    assert all(backoff_delay(0, None, EP, rng) <= 0.5 for _ in range(200))
    assert all(backoff_delay(0, 2.0, EP, rng) >= 2.0 for _ in range(50))  # Retry-After is a floor
    assert backoff_delay(0, 99.0, EP, rng) == 10.0                       # ... capped at retry_after_max_s


@pytest.mark.parametrize("code,kind,retry", [(429, "http_429", True), (500, "http_500", True),
                                             (503, "http_503", True), (408, "http_408", True),
                                             (400, "http_400", False), (401, "http_401", False),
                                             (422, "http_422", False)])
def test_classify_status_codes(code, kind, retry):
    v = classify(_status_error(code, {"retry-after": "2"}), 5.0)
    assert isinstance(v, Retryable if retry else Fatal) and v.kind == kind
    if retry:
        assert v.retry_after == 2.0


def test_classify_other_errors():
    assert classify(asyncio.TimeoutError(), 5.0).kind == "timeout"
    req = httpx.Request("POST", "http://x")
    assert classify(openai.APITimeoutError(req), 5.0).kind == "timeout"
    try:
        try:
            raise ConnectionRefusedError(111, "refused")
        except OSError as e:
            raise openai.APITimeoutError(req) from e
    except openai.APITimeoutError as e:
        v = classify(e, 5.0)  # a refused connection reported as a connect timeout
    assert v.kind == "connection" and "ConnectionRefusedError" in str(v)
    assert classify(openai.APIConnectionError(request=req), 5.0).kind == "connection"
    assert classify(ValueError("bad json"), 5.0).kind == "malformed_response"
    assert classify(RuntimeError("bug"), 5.0) is None  # not an attempt failure: recorded as unexpected


def test_usage_book_totals_and_costs():
    b = UsageBook()
    b.add("a", calls=1, prompt_tokens=1000, completion_tokens=100, requests=1, ok=1)
    b.add("a", calls=1, error="http_429")
    b.add("b", calls=1, error="http_429", backoff_s=0.123456)
    b.add_cached({"a": [3, 300, 30], "c": [1, 10, 1]})
    total, per_tag = b.totals(EP)
    assert (total["requests"], total["ok"], total["calls"], total["cached_calls"]) == (5, 5, 3, 4)
    assert total["errors"] == {"http_429": 2} and per_tag["a"]["errors"] == {"http_429": 1}
    assert total["cost_usd"] == pytest.approx((1000 * 2 + 100 * 8) / 1e6)
    assert total["saved_cost_usd"] == pytest.approx((310 * 2 + 31 * 8) / 1e6)
    assert total["backoff_s"] == 0.1235 and set(per_tag) == {"a", "b", "c"}
