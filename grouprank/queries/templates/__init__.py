"""Versioned prompt templates for LLM query generation (InPars / Promptagator / ReasonIR style).

A template is identified as ``queries.<type>@<version>`` (e.g. ``queries.reasoning@1``); that key
is the LLM request's `template_version` (part of the LLM cache key) and is written to the
`template_version` column of every generated query. Changing the wording of a template means a
new version here, never an edit of an existing one: old outputs stay attributable.

Types
- ``keyword``: a short keyword query (2-8 words) as typed into a search box (InPars-style).
- ``question``: one self-contained natural-language question the document answers.
- ``reasoning``: a long StackExchange-style post (BRIGHT / ReasonIR style) describing a concrete
  situation whose answer needs the document, in the asker's own words: the parser rejects a post
  that copies 8 or more consecutive words of the document.

The answer format is a JSON object ``{"query": "..."}``; `grouprank.queries.generation.parse_query`
also accepts the usual deviations (code fences, prose around the JSON, other key names, a
``Query: ...`` line, plain text).

Prompt layout (the local responder and tests rely on it): the user message holds the instruction,
a ``Query type: <type>`` line, optional examples, then the document between ``<document>`` and
``</document>`` (title on the first line when there is one), then the answer format.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

_RESERVED = re.compile(r"<(\s*/?\s*(?:document|query|example|answer|system)\b)", re.I)


def clean(text: str | None, max_chars: int | None = None) -> str:
    """Whitespace collapsed, cut to `max_chars` (at a word boundary when possible), and the tags
    the prompt uses defused so a document cannot close its own `<document>` block."""
    t = " ".join(str(text or "").split())
    if max_chars and len(t) > max_chars:
        cut = t[:max_chars]
        sp = cut.rfind(" ")
        t = (cut[:sp] if sp > max_chars * 0.8 else cut).rstrip()
    return _RESERVED.sub(lambda m: "\u2039" + m.group(1), t)


SYSTEM = ("You write search queries for information-retrieval training data. You read one document "
          "and write the query a real user would issue to find it. You answer with a JSON object "
          "only.")

ANSWER_FORMAT = 'Answer with a JSON object only, exactly in this form: {"query": "<your query>"}'


@dataclass(frozen=True)
class QueryTemplate:
    """One versioned template. `max_copy_words`: a query containing this many consecutive words of
    the document (normalised) is rejected by the parser (None: no check)."""

    query_type: str
    version: int
    instructions: str
    max_tokens: int
    max_chars: int
    min_words: int = 1
    max_copy_words: int | None = None
    system: str = SYSTEM

    @property
    def key(self) -> str:
        return f"queries.{self.query_type}@{self.version}"

    def messages(self, title: str | None, text: str, *, max_doc_chars: int | None = 3000,
                 examples: Sequence[tuple[str, str]] = ()) -> list[dict]:
        parts = [self.instructions, "", f"Query type: {self.query_type}"]
        if examples:
            parts += ["", "Examples of queries for documents of this collection (for the style "
                      "only; do not reuse their content):"]
            for q, d in examples:
                parts += ["<example>", f"<document>{clean(d, 300)}</document>",
                          f"<query>{clean(q, 500)}</query>", "</example>"]
        body = clean(text, max_doc_chars)
        t = clean(title)
        parts += ["", "<document>", f"{t}\n{body}" if t else body, "</document>", "", ANSWER_FORMAT]
        return [{"role": "system", "content": self.system}, {"role": "user", "content": "\n".join(parts)}]


TEMPLATES: dict[str, QueryTemplate] = {}


def register(t: QueryTemplate) -> QueryTemplate:
    if t.key in TEMPLATES:
        raise ValueError(f"template {t.key} already registered (new wording = new version)")
    TEMPLATES[t.key] = t
    return t


register(QueryTemplate(
    "keyword", 1,
    "Write one short keyword query (2 to 8 words) that a person looking for the information in the "
    "document below would type into a search engine. Use the words a searcher would use, not a "
    "full sentence and not a question. The document must be a good answer to the query.",
    # copy limit: a keyword query holding 6+ consecutive words of its document is a copied string
    # (copied text retrieves its source, so the round trip would keep it); 5-word phrases such as
    # "integral colored concrete floor cost" stay allowed
    max_tokens=64, max_chars=120, min_words=1, max_copy_words=6))

register(QueryTemplate(
    "question", 1,
    "Write one natural-language question that a person would ask and that the document below "
    "answers. The question must make sense on its own, without the document: name the topic "
    "instead of saying 'this study' or 'the document'. Use your own words; do not copy a sentence "
    "from the document.",
    max_tokens=128, max_chars=400, min_words=3, max_copy_words=12))

register(QueryTemplate(
    "reasoning", 1,
    "Write a question post, as a person would post it on a StackExchange-style Q&A site, whose "
    "answer requires the knowledge in the document below. The post describes a concrete situation, "
    "observation or problem in the person's own words (80 to 200 words) and ends with a question. "
    "The person has never seen the document: do not mention it, do not quote it, do not copy its "
    "phrases, and prefer everyday descriptions to its technical terms, so that seeing the "
    "connection between the post and the document takes reasoning (as in the BRIGHT benchmark).",
    max_tokens=512, max_chars=3000, min_words=25, max_copy_words=8))


def latest(query_type: str) -> QueryTemplate:
    versions = [t for t in TEMPLATES.values() if t.query_type == query_type]
    if not versions:
        from grouprank.errors import UserError
        raise UserError(f"no query template for type {query_type!r} "
                        f"(have {sorted({t.query_type for t in TEMPLATES.values()})})")
    return max(versions, key=lambda t: t.version)


def get(query_type: str, key: str | None = None) -> QueryTemplate:
    """The template for a query type: `key` ("queries.question@1" or "question@1") if given, else
    the latest version."""
    if not key:
        return latest(query_type)
    k = key if key.startswith("queries.") else f"queries.{key}"
    if "@" not in k:
        return latest(k.split(".", 1)[1])
    t = TEMPLATES.get(k)
    if t is None:
        from grouprank.errors import UserError
        raise UserError(f"unknown query template {key!r} (have {sorted(TEMPLATES)})")
    if t.query_type != query_type:
        from grouprank.errors import UserError
        raise UserError(f"template {key!r} is for query type {t.query_type!r}, not {query_type!r}")
    return t
