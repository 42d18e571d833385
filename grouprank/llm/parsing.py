"""Tolerant parsing of structured LLM output.

Models wrap JSON in prose, code fences, `<answer>` tags, add trailing text or trailing commas, or
use Python literals. These helpers find the JSON anyway and raise `ParseError` (retryable) when
there is none, so a request's `validate` callable can be built from them. `strip_think` keeps the
answer part of a reasoning model's output (complete and unfinished `<think>` blocks removed),
`unfence` reads inside Markdown code fences:

    def validate(text):
        obj = extract_json(extract_tag(text, "answer") or text)
        ...check obj, raise ParseError("missing [3]") if incomplete...
        return obj
"""
from __future__ import annotations

import ast
import json
import re
from typing import Any, Callable

from .types import ParseError

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)```", re.S)
THINK_RE = re.compile(r"<\s*(think|thinking|reasoning)\s*>.*?<\s*/\s*\1\s*>", re.I | re.S)
_THINK_OPEN = re.compile(r"<\s*(?:think|thinking|reasoning)\s*>", re.I)
_THINK_CLOSE = re.compile(r"<\s*/\s*(?:think|thinking|reasoning)\s*>", re.I)
_OPEN_FENCE = re.compile(r"```[ \t]*[A-Za-z0-9_+-]*[ \t]*\n?(.*?)(?:```|$)", re.S)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_TAG_PATTERNS: dict[str, re.Pattern] = {}


def strip_think(text: str) -> str:
    """The answer part of a reasoning model's output: every complete ``<think>…</think>`` block
    (also ``<thinking>``, ``<reasoning>``) replaced by a space; then, when a closing tag is left
    (the chat template opened the block in the prompt), only what follows the last one; and when
    an opening tag is left (the reasoning never closed: cut at max_tokens), only what precedes
    it: labels or scores inside unfinished reasoning are drafts, not the answer."""
    t = THINK_RE.sub(" ", text)
    last = None
    for last in _THINK_CLOSE.finditer(t):
        pass
    if last is not None:
        t = t[last.end():]
    m = _THINK_OPEN.search(t)
    if m is not None:
        t = t[:m.start()]
    return t


def unfence(text: str) -> str:
    """The contents of the answer's Markdown code fences joined (an unclosed fence runs to the end),
    or the text unchanged when it has none."""
    if "```" not in text:
        return text
    parts = [m.group(1).strip() for m in _OPEN_FENCE.finditer(text)]
    parts = [p for p in parts if p]
    return "\n".join(parts) if parts else text


def extract_tag(text: str | None, tag: str, *, last: bool = True) -> str | None:
    """Inner text of `<tag>…</tag>` (case-insensitive, attributes allowed), stripped.

    The last complete occurrence by default (a rationale may mention the tag before the real
    answer); `last=False` gives the first. None when there is no complete occurrence (an opening
    tag without its closing tag is a truncated answer, not an answer)."""
    if not text or "<" not in text:
        return None
    pat = _TAG_PATTERNS.get(tag)
    if pat is None:
        t = re.escape(tag)
        # the content may not contain another opening tag: "<answer> goes last</reason><answer>x"
        pat = _TAG_PATTERNS[tag] = re.compile(
            rf"<{t}(?:\s[^>]*)?>((?:(?!<{t}[\s>]).)*?)</{t}\s*>", re.S | re.I)
    matches = pat.findall(text)
    if not matches:
        return None
    return (matches[-1] if last else matches[0]).strip()


def _loads(s: str) -> Any:
    """json.loads, then light repairs: trailing commas, Python literals (single quotes, True/None)."""
    try:
        return json.loads(s)
    except (json.JSONDecodeError, ValueError):
        pass
    fixed = _TRAILING_COMMA.sub(r"\1", s)
    if fixed != s:
        try:
            return json.loads(fixed)
        except (json.JSONDecodeError, ValueError):
            pass
    try:
        v = ast.literal_eval(fixed)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        raise ValueError("not JSON") from None
    if isinstance(v, (dict, list)):
        return _jsonable(v)
    raise ValueError("not a JSON object or array")


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k) if not isinstance(k, str) else k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _balanced_spans(text: str):
    """Yield (start, end) of each top-level balanced {...} or [...] span, honouring JSON strings."""
    n = len(text)
    i = 0
    while i < n:
        c = text[i]
        if c not in "{[":
            i += 1
            continue
        stack = [c]
        j = i + 1
        in_str: str | None = None
        while j < n and stack:
            d = text[j]
            if in_str:
                if d == "\\":
                    j += 2
                    continue
                if d == in_str:
                    in_str = None
            elif d in "\"'":
                # a single quote inside prose ("doc's") must not swallow the rest: only treat it
                # as a string delimiter when it follows a JSON-ish boundary
                if d == '"' or text[j - 1] in "{[,: \t\n":
                    in_str = d
            elif d in "{[":
                stack.append(d)
            elif d in "}]":
                if (stack[-1] == "{") != (d == "}"):
                    break  # mismatched: not a JSON span
                stack.pop()
            j += 1
        if not stack:
            yield i, j
            i = j
        elif j >= n:
            return  # ran off the end: the rest is inside an unclosed (truncated) value
        else:
            i += 1


def extract_json(text: str | None, *, expect: type | tuple[type, ...] | None = None) -> Any:
    """Find and parse the JSON value in an LLM answer.

    Tries, in order: the whole text; the contents of code fences (```json … ```); the `<answer>`
    tag; then every balanced {...}/[...] span in the text, largest first. Trailing commas and
    Python-literal syntax are repaired. `expect` (e.g. dict) rejects values of another type.
    Raises ParseError(retryable=True) when nothing parses."""
    if text is None or not str(text).strip():
        raise ParseError("empty answer")
    text = str(text)
    stripped = text.strip()
    if stripped[:1] in "{[":  # fast path: the whole answer is plain JSON
        try:
            v = json.loads(stripped)
            if expect is None or isinstance(v, expect):
                return v
        except ValueError:
            pass

    def candidates():
        yield stripped
        if "```" in text:
            for m in _FENCE.finditer(text):
                yield m.group(2).strip()
        tagged = extract_tag(text, "answer")
        if tagged:
            yield tagged
        spans = sorted(_balanced_spans(text), key=lambda se: se[0] - se[1])  # largest first
        for s, e in spans:
            yield text[s:e]

    seen: set[str] = set()
    for c in candidates():
        if not c or c in seen:
            continue
        seen.add(c)
        try:
            v = _loads(c)
        except ValueError:
            continue
        if expect is not None and not isinstance(v, expect):
            continue
        return v
    if "{" in text or "[" in text:
        raise ParseError("no parsable JSON in answer (truncated or malformed)")
    raise ParseError("no JSON in answer")


def json_validator(check: Callable[[Any], Any] | None = None, *, tag: str | None = None,
                   expect: type | tuple[type, ...] | None = None) -> Callable[[str], Any]:
    """Build a `validate` callable for LLMRequest: take `<tag>` content when a tag is given (a
    missing closing tag is a retryable ParseError), extract JSON, then `check(obj)` (which may
    return a transformed value and raise ParseError)."""

    def validate(text: str) -> Any:
        body = text
        if tag is not None:
            body = extract_tag(text, tag)
            if body is None:
                raise ParseError(f"no complete <{tag}>…</{tag}> in answer")
        obj = extract_json(body, expect=expect)
        return check(obj) if check is not None else obj

    return validate
