"""Rendering shared by the judge templates (same conventions as grouprank.reranker.prompt)."""
from __future__ import annotations

import re

# Tags a document (or query) must not be able to open or close inside a prompt.
_RESERVED_TAG = re.compile(r"<(\s*/?\s*(?:document|reason|answer|query|system|instructions?)\b)", re.I)

QUERY_RE = re.compile(r"<query>\n(.*?)\n</query>", re.S)
DOC_RE = re.compile(r'<document id="\[(\d+)\]">\n(.*?)\n</document>', re.S)


def defuse(text: str) -> str:
    return _RESERVED_TAG.sub(lambda m: "\u2039" + m.group(1), text)


def clean_text(text: str, max_chars: int | None = None) -> str:
    """Collapse whitespace (newlines included), cut to `max_chars`, defuse reserved tags."""
    t = " ".join(str(text or "").split())
    if max_chars and len(t) > max_chars:
        t = t[:max_chars].rstrip()
    return defuse(t)


def render_query(query: str) -> str:
    return f"<query>\n{clean_text(query)}\n</query>"


def render_doc(label: int, text: str, max_doc_chars: int | None) -> str:
    return f'<document id="[{label}]">\n{clean_text(text, max_doc_chars)}\n</document>'


def extract_query_and_docs(user_text: str) -> tuple[str | None, list[tuple[int, str]]]:
    """Inverse of the rendering: (query, [(label, text), ...]) from a user prompt."""
    q = QUERY_RE.search(user_text)
    docs = [(int(m.group(1)), m.group(2)) for m in DOC_RE.finditer(user_text)]
    return (q.group(1) if q else None), docs
