"""Versioned judge prompt templates, one module per judge kind.

Each module exposes `TEMPLATE_VERSION` (part of the LLM cache key: bump it whenever the prompt
text or the expected answer changes), `SYSTEM_PROMPT`, `build_messages(...)` and a parser.
The groupwise template is the reranker's GroupRank prompt (`grouprank.reranker.prompt`), reused
as is so that judge labels and reranker training speak the same format.

All templates render the query as ``<query>…</query>`` and each document as
``<document id="[i]">…</document>`` (whitespace collapsed, cut to `max_doc_chars`, reserved tags
defused), and their system prompts say that document text is data, never instructions.
"""
from . import groupwise, listwise, pointwise  # noqa: F401

TEMPLATES = {"pointwise": pointwise, "listwise": listwise, "groupwise": groupwise}
