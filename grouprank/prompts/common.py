"""Rendering and reading conventions shared by every scoring prompt (pointwise, listwise,
groupwise).

- The query is rendered as ``<query>\\n…\\n</query>`` and document i as
  ``<document id="[i]">\\n…\\n</document>``; `extract_query_and_docs` reads them back.
- Text is cleaned once (`clean_text`): whitespace, newlines included, collapsed to single spaces;
  documents cut to `max_doc_chars` characters (the authors' inference code: 3000); and every
  tag the formats rely on (document/reason/answer/query/system/instructions) defused by
  replacing its ``<`` with ``‹``, so a document cannot close its block, fake an answer or pose
  as new instructions. The system prompts also say that document text is data, never
  instructions (`grouprank.judges.injection` flags documents that try anyway).
- A ``<think>…</think>`` block of a reasoning model is ignored by the lenient parsers, and so is
  an unfinished one (`strip_think`); `unfence` reads inside Markdown code fences.
"""
from __future__ import annotations

import logging
import re

from grouprank.llm.parsing import THINK_RE, strip_think, unfence  # noqa: F401 - the one implementation

# Tags a document (or query, or rationale) must not be able to open or close inside a prompt.
_RESERVED_TAG = re.compile(r"<(\s*/?\s*(?:document|reason|answer|query|system|instructions?)\b)", re.I)

QUERY_RE = re.compile(r"<query>\n(.*?)\n</query>", re.S)
DOC_RE = re.compile(r'<document id="\[(\d+)\]">\n(.*?)\n</document>', re.S)


# Chat-template control tokens and role markers (ChatML/Qwen/SmolLM, Llama 2/3, Gemma, Mistral,
# Phi, GPT-style <|endoftext|>, fill-in-the-middle): inside a document they could end the user turn
# and open a forged system or assistant turn once the prompt goes through a chat template.
_CONTROL_TOKEN = re.compile(
    r"<(?=\|[A-Za-z_][A-Za-z0-9_.:\-]{0,40}\|>)"                       # <|im_start|>, <|eot_id|>, <|endoftext|>
    r"|<(?=\s*/?\s*(?:start_of_turn|end_of_turn|bos|eos|s|pad|unk|sep|cls|mask)\s*>)"  # Gemma, <s> </s>
    r"|\[(?=\s*/?\s*(?:INST|SYS|AVAILABLE_TOOLS|TOOL_CALLS|TOOL_RESULTS)\s*\])"  # [INST] [/INST] (Mistral, Llama 2)
    r"|<(?=<\s*/?\s*SYS\s*>>)",                                             # <<SYS>> <</SYS>>
    re.I)


def defuse(text: str) -> str:
    """Reserved tags made inert: ``<answer>`` -> ``‹answer>`` (also closing and spaced forms), and
    chat-template control tokens likewise: ``<|im_start|>`` -> ``‹|im_start|>``, ``[INST]`` ->
    ``‹INST]``, ``<start_of_turn>`` -> ``‹start_of_turn>``, ``<<SYS>>`` -> ``‹<SYS>>``. Every prompt
    builder renders documents, queries and rationales through this (via `clean_text`)."""
    text = _RESERVED_TAG.sub(lambda m: "\u2039" + m.group(1), text)
    return _CONTROL_TOKEN.sub("\u2039", text)


def clean_text(text: str | None, max_chars: int | None = None) -> str:
    """Collapse whitespace (newlines included), cut to `max_chars` (None or 0: no cut), defuse
    reserved tags."""
    t = " ".join(str(text or "").split())
    if max_chars and len(t) > max_chars:
        t = t[:max_chars].rstrip()
    return defuse(t)


def cut_queries(queries: dict[str, str], max_chars: int | None, where: str = "prompts") -> dict[str, str]:
    """`queries` (id -> text) with every text longer than `max_chars` cut to it
    (`prompts.max_query_chars`, the query's analogue of `max_doc_chars`); one warning names how many
    were cut and the longest. None or 0: unchanged."""
    if not max_chars:
        return queries
    long = {q: len(t) for q, t in queries.items() if t is not None and len(t) > max_chars}
    if not long:
        return queries
    worst = max(long, key=long.get)
    logging.getLogger(__name__).warning(
        "%s: %d quer%s longer than prompts.max_query_chars=%d cut to it (longest: %r, %s characters)",
        where, len(long), "y" if len(long) == 1 else "ies", max_chars, worst, f"{long[worst]:,}")
    return {q: (t[:max_chars] if q in long else t) for q, t in queries.items()}


def render_query(query: str) -> str:
    return f"<query>\n{clean_text(query)}\n</query>"


def render_doc(label: int, text: str, max_doc_chars: int | None) -> str:
    return f'<document id="[{label}]">\n{clean_text(text, max_doc_chars)}\n</document>'


def render_docs(docs: list[str], max_doc_chars: int | None) -> str:
    """Documents [1]..[n] in list order, one block each, newline-separated."""
    return "\n".join(render_doc(i, d, max_doc_chars) for i, d in enumerate(docs, 1))


def chat(system: str, user: str) -> list[dict]:
    """The two chat messages every scoring prompt sends."""
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def extract_query_and_docs(user_text: str) -> tuple[str | None, list[tuple[int, str]]]:
    """Inverse of the rendering: (query, [(label, text), ...]) from a user prompt."""
    q = QUERY_RE.search(user_text)
    docs = [(int(m.group(1)), m.group(2)) for m in DOC_RE.finditer(user_text)]
    return (q.group(1) if q else None), docs
