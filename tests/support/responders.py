"""Trivial responders for the local server (tests and smoke runs).

A responder is `fn(messages: list[dict], body: dict) -> str`; it may also accept a keyword
`fault` (None or "wrong_labels") to apply the wrong-labels fault itself. The judges' real
responder is `tests.support.judge_responder:respond`.
"""
from __future__ import annotations

import hashlib
import json
import re

_LABEL = re.compile(r"\[(\d+)\]")


def last_user(messages: list[dict]) -> str:
    """The last user message's text."""
    for m in reversed(messages):
        if m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else json.dumps(c)
    return ""


def echo(messages: list[dict], body: dict) -> str:
    """The last user message, verbatim."""
    return last_user(messages)


def _score(*parts: str) -> int:
    return hashlib.sha256("\x1f".join(parts).encode()).digest()[0] % 11


def labels(messages: list[dict], body: dict) -> str:
    """Deterministic 0-10 scores in the GroupRank answer shape.

    If the last user message labels documents `[1]…[c]`, answers
    `<reason>…</reason><answer>{"[1]": s1, …}</answer>` with one score per label; otherwise
    `<answer>{"score": s}</answer>`. Scores are a hash of the prompt and label: stable across runs."""
    text = last_user(messages)
    found = sorted({int(m) for m in _LABEL.findall(text)})
    if found:
        scores = {f"[{i}]": _score(text, str(i)) for i in found}
    else:
        scores = {"score": _score(text)}
    return f"<reason>scored {len(scores)} item(s)</reason>\n<answer>{json.dumps(scores)}</answer>"


def request_echo(messages: list[dict], body: dict) -> str:
    """JSON of the request body without the messages (what the client sent: model, sampling
    params, response_format ...). For tests."""
    return json.dumps({k: v for k, v in body.items() if k != "messages"}, sort_keys=True)


def score_json(messages: list[dict], body: dict) -> str:
    """A pointwise-shaped answer `{"score": s, "reason": "..."}` with a deterministic 0-10 score
    (a hash of the prompt). For I/O benchmarks of the pointwise judge."""
    return json.dumps({"score": _score(last_user(messages)), "reason": "stub answer"})


def score_json_system(messages: list[dict], body: dict) -> str:
    """A pointwise-shaped answer whose score hashes the whole prompt (system prompt included) and
    whose reason quotes the start of the system prompt: a test reads, from the judgments, which
    template the endpoint was sent."""
    system = next((m.get("content") or "" for m in messages if m.get("role") == "system"), "")
    return json.dumps({"score": _score(system, last_user(messages)), "reason": "system: " + system[:40]})
