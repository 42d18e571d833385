"""The pieces of the managed local endpoint and of log-probability plumbing that need no server:
endpoint config, cache identity, model files, the cache's logprobs column (and its migration),
the request body and the response reading, reasoning/fence stripping, usage rates."""
from __future__ import annotations

import json
import sqlite3

import pytest

from grouprank.errors import UserError
from grouprank.llm.cache import LLMCache
from grouprank.llm.config import LLMConfig, LLMEndpoint
from grouprank.llm.keys import endpoint_identity, request_hash
from grouprank.llm.local_models import model_path
from grouprank.llm.parsing import strip_think, unfence
from grouprank.llm.transport import compact_logprobs, request_body
from grouprank.llm.types import LLMRequest
from grouprank.llm.usage import UsageBook


def _req(**kw):
    return LLMRequest(messages=[{"role": "user", "content": "hi"}], template_version="t@1", **kw)


def test_managed_endpoint_config():
    cfg = LLMConfig.model_validate({"endpoints": [{"name": "local", "managed": "smollm2"}]})
    ep = cfg.endpoints[0]
    assert ep.managed == "smollm2" and ep.base_url is None and ep.logprobs is True
    with pytest.raises(ValueError, match="not both"):
        LLMEndpoint(name="x", base_url="http://127.0.0.1:9/v1", managed="smollm2")


def test_cache_identity_of_a_managed_endpoint_ignores_its_port():
    ep = LLMEndpoint(name="local", managed="smollm2")
    a = ep.model_copy(update={"base_url": "http://127.0.0.1:40001/v1"})
    b = ep.model_copy(update={"base_url": "http://127.0.0.1:40002/v1"})
    plain = LLMEndpoint(name="local", base_url="http://127.0.0.1:40001/v1")
    assert endpoint_identity(a) == endpoint_identity(ep) == "managed:smollm2"
    assert endpoint_identity(plain) == "http://127.0.0.1:40001/v1"
    assert request_hash(_req(), a) == request_hash(_req(), b) == request_hash(_req(), ep)
    assert request_hash(_req(), a) != request_hash(_req(), plain)
    # asking for logprobs is part of the key (an answer without them must not stand in); not asking
    # leaves the key as it always was
    assert request_hash(_req(top_logprobs=10), plain) != request_hash(_req(), plain)
    assert request_hash(_req(top_logprobs=None), plain) == request_hash(_req(), plain)


def test_model_files():
    p = model_path("smollm2")
    assert p.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and p.stat().st_size > 90_000_000
    with open(p, "rb") as fh:
        assert fh.read(4) == b"GGUF"
    assert model_path("SmolLM2-135M") == p  # alias
    with pytest.raises(UserError, match="unknown local model 'gpt-9'"):
        model_path("gpt-9")
    with pytest.raises(UserError, match="no such GGUF file"):
        model_path("/nonexistent/x.gguf")


def test_cache_keeps_logprobs_and_migrates_old_files(tmp_path):
    f = tmp_path / "old.sqlite"
    con = sqlite3.connect(f)  # the schema before the logprobs column
    con.executescript("""CREATE TABLE answers (key TEXT PRIMARY KEY, text TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,
        finish_reason TEXT, model TEXT, template_version TEXT, tag TEXT, created REAL NOT NULL) WITHOUT ROWID;
        CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT);
        INSERT INTO answers VALUES ('old', 'seven', 3, 1, 'stop', 'm', 't', 'x', 0);""")
    con.commit()
    con.close()
    c = LLMCache(f)
    assert c.get("old") == ("seven", 3, 1, "stop", None)
    lp = [["7", -0.1, [["7", -0.1], ["8", -2.5]]]]
    c.put("new", "7", 3, 1, "stop", logprobs=lp)
    assert c.get("new").logprobs == lp
    c.close()
    assert LLMCache(f).get("new").logprobs == lp  # reopened: the column is there, no second ALTER


def test_request_body_and_response_logprobs():
    ep = LLMEndpoint(name="x", base_url="http://h/v1")
    body = request_body(_req(top_logprobs=5), ep)
    assert body["logprobs"] is True and body["top_logprobs"] == 5
    assert "logprobs" not in request_body(_req(), ep)
    assert "logprobs" not in request_body(_req(top_logprobs=5), ep.model_copy(update={"logprobs": False}))
    choice = {"message": {"content": "7"}, "logprobs": {"content": [
        {"token": "7", "logprob": -0.2, "bytes": [55],
         "top_logprobs": [{"token": "7", "logprob": -0.2}, {"token": "8", "logprob": -1.9}]}]}}
    assert compact_logprobs(choice) == [["7", -0.2, [["7", -0.2], ["8", -1.9]]]]
    assert compact_logprobs({"message": {}}) is None
    assert compact_logprobs({"logprobs": {"content": [{"token": 7}]}}) is None


@pytest.mark.parametrize("text,want", [
    ("<think>[1] > [2]</think>\n[2] > [1]", "[2] > [1]"),
    ("drafts [3] > [1]\n</think>\n[1] > [3]", "[1] > [3]"),          # template opened the block
    ("[2] <think>still thinking [1]", "[2]"),                         # never closed (cut)
    ("<thinking>x</thinking>ok", "ok"),
    ("no reasoning", "no reasoning"),
])
def test_strip_think(text, want):
    assert strip_think(text).strip() == want


def test_unfence():
    assert unfence("Sure:\n```text\nwhat causes malaria\n```\nHope it helps") == "what causes malaria"
    assert unfence("```json\n{\"a\": 1") == "{\"a\": 1"  # unclosed fence runs to the end
    assert unfence("plain") == "plain"


def test_usage_rates():
    book = UsageBook()
    book.add("pw", requests=4, ok=3, failed=1, calls=6, answers=5, parse_failures=2, retries=1, parse_retries=1)
    ep = LLMEndpoint(name="x", base_url="http://h/v1")
    total, per = book.totals(ep)
    assert per["pw"]["parse_failure_rate"] == 0.4 and per["pw"]["retry_rate"] == round(2 / 6, 4)
    assert per["pw"]["failure_rate"] == 0.25 and total["parse_failure_rate"] == 0.4
    assert json.dumps(total)  # plain data
