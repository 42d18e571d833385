"""LLM query generation from documents, through the project's LLM client layer.

    recs = generate_queries(documents, doc_ids, client, query_types=("keyword", "question"))

- one request per (document, query type), template `queries.<type>@<version>`; results come back
  in input order through `LLMClient.map` (bounded concurrency, retries, persistent cache);
- the request's validator is `parse_query`: tolerant parsing (JSON `{"query": ...}`, code fences,
  prose around it, other key names, a `Query: ...` line, plain text), then checks (length,
  refusals, placeholders, copying from the document); a rejected answer is asked once more by the
  client, then recorded;
- every request becomes one QUERIES record: decision "kept" (for the filters to judge), or
  "parse_error" (the endpoint answered, no usable query: text = the raw answer, detail = why) or
  "generation_failed" (no answer: HTTP errors / timeouts after the client's retries). Nothing is
  dropped silently.

Generated query ids are ``gen-<type>-<doc_id>``; split "generated"; source_doc_id, generator_model
(the endpoint's model), template_version and query_type are filled in.
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from grouprank.llm.parsing import extract_json, strip_think, unfence
from grouprank.llm.types import LLMRequest, ParseError
from grouprank.text import normalize_query

from . import templates as T

_LABEL_LINE = re.compile(r"(?im)^[ \t>*_#-]*(?:generated\s+|search\s+)?(query|question|post|keywords?)"
                         r"[ \t*_]*[:\-][ \t*_]*(.*)$")
_PREAMBLE = re.compile(r"(?i)^\s*(?:sure|okay|ok|certainly|of course)?[!,. ]*"
                       r"(?:here(?:'s| is| are)\b[^:\n]*:|the (?:query|question) is\b[^:\n]*:)\s*")
_REFUSAL = re.compile(r"(?i)^\s*(?:i'?m sorry|i am sorry|sorry,|i can(?:'|no)t|i cannot|i am unable|"
                      r"i'm unable|as an ai\b)")
_PLACEHOLDER = re.compile(r"(?i)<\s*/?\s*(?:your query|query|document|example)\s*>|\{\s*\"?query\"?\s*:")
# an answer that tries to be JSON: a code fence, an object/array opening with a string, a query key
_JSONISH = re.compile(r'```|^\s*[\[{]|\{\s*["\']|\[\s*[{"\']|"(?:query|question|post)"\s*:', re.M)
# an answer about the document ("The document provides a detailed answer to the question.")
_META = re.compile(r"(?i)^\s*(?:the|this)\s+(?:document|passage|text|article|answer|response)\b")
_QUOTED = re.compile(r'["\u201c]([^"\u201d]{8,})["\u201d]?')
_QUERY_KEYS = ("query", "question", "post", "search_query", "keyword_query", "keywords", "text")
_QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb"


def _from_json(obj: Any) -> str | None:
    """The query string in a parsed JSON value, or None."""
    if isinstance(obj, str):
        return obj
    if isinstance(obj, list):
        for x in obj:
            s = _from_json(x)
            if s:
                return s
        return None
    if isinstance(obj, dict):
        low = {str(k).lower().strip(): v for k, v in obj.items()}
        for k in _QUERY_KEYS:
            if k in low:
                v = low[k]
                if isinstance(v, list) and v and all(isinstance(x, str) for x in v) and k == "keywords":
                    return " ".join(v)
                s = _from_json(v)
                if s:
                    return s
        for k in ("queries", "questions", "results", "output", "answer"):
            if k in low:
                s = _from_json(low[k])
                if s:
                    return s
        strings = [v for v in low.values() if isinstance(v, str) and v.strip()]
        if len(strings) == 1:
            return strings[0]
    return None


def extract_query(text: str) -> tuple[str, str]:
    """(query, how) from an LLM answer, tolerant of the usual deviations; raises ParseError.
    `how` is one of json, label, quoted (the quoted query inside an answer that talks about the
    document), text. An answer that only talks about the document is refused."""
    if text is None or not str(text).strip():
        raise ParseError("empty answer")
    t = strip_think(str(text)).strip()
    if not t:
        raise ParseError("answer holds only a <think> block")
    if "```" in t:
        inner = unfence(t).strip()
        if inner and not _JSONISH.search(inner):  # a fenced plain-text query
            t = inner
    if _JSONISH.search(t):
        try:
            q = _from_json(extract_json(t))
        except ParseError:
            q = None
        if q:
            return q, "json"
        # JSON was attempted but is broken (cut at max_tokens, unbalanced): salvage a complete
        # "query": "..." member if there is one, else it is a parse error, never plain text
        m = re.search(r'"(?:query|question|post)"\s*:\s*"((?:[^"\\]|\\.)*)"', t)
        if m:
            try:
                return json.loads(f'"{m.group(1)}"'), "json"
            except json.JSONDecodeError:
                pass
        raise ParseError("malformed or truncated JSON answer")
    m = _LABEL_LINE.search(t)
    if m:
        rest = m.group(2).strip()
        if not rest:  # "Query:\n<the query on the next lines>"
            rest = t[m.end():].strip()
        elif m.group(1).lower() == "post":  # a post runs over several lines
            rest = (rest + " " + t[m.end():]).strip()
        if rest:
            return rest, "label"
    t = _PREAMBLE.sub("", t, count=1).strip()
    if not t:
        raise ParseError("no query in answer")
    if _META.match(t):  # "The document provides a detailed answer to the question "…?"" (SmolLM2)
        quoted = [m.group(1).strip() for m in _QUOTED.finditer(t)]
        if quoted:
            return max(quoted, key=lambda x: (x.endswith("?"), len(x))), "quoted"
        raise ParseError(f"the answer describes the document instead of giving a query: {t[:80]!r}")
    return t, "text"


# commentary a small model appends to its query: a line or sentence about the query or the document,
# a note/explanation, a parenthesis about "this query", a closing pleasantry
_COMMENT_START = re.compile(
    r"(?i)^(?:[-\u2013\u2014(\[]\s*)?(?:(?:this|the|my|that)\s+(?:query|question|search|keywords?|document|passage|text|answer|response)\b"
    r"|(?:note|explanation|reasoning|rationale|answer|justification|comment)\s*:"
    r"|i\s+(?:hope|chose|used|think|picked)\b|hope\s+this\s+helps|let\s+me\s+know\b|it\s+(?:asks|targets|focuses)\b)")
_COMMENT_ONLY = re.compile(r"(?i)^\s*(?:(?:this|my)\s+(?:query|question|search|keywords?)\b|"
                           r"(?:note|explanation|reasoning|rationale)\s*:)")
_SENTENCE_SPLIT = re.compile(r"(?<=[?.!\"\u201d])\s+|\s+(?=[-\u2013\u2014(\[]\s*(?:this|the|note)\b)", re.I)


def strip_commentary(q: str, multiline: bool = False) -> str:
    """The query without trailing commentary: for one-line query types the first line holds the
    query and later lines that are commentary are dropped; then, within the text, everything from the
    first sentence or parenthesis that talks about the query or the document ("This query targets
    ...", "(Note: ...)", "- the query asks ...", "I hope this helps") is cut. Raises ParseError when
    nothing but commentary is left."""
    if not multiline:
        lines = [ln.strip() for ln in q.splitlines() if ln.strip()]
        if len(lines) > 1 and all(_COMMENT_START.match(ln) for ln in lines[1:]):
            q = lines[0]
    parts = _SENTENCE_SPLIT.split(q.strip())
    if _COMMENT_ONLY.match(parts[0]):
        raise ParseError(f"the answer holds commentary, not a query: {q[:80]!r}")
    keep: list[str] = []
    for i, part in enumerate(parts):
        if i and _COMMENT_START.match(part.strip()):
            break
        keep.append(part)
    out = " ".join(keep).strip()
    if not out:
        raise ParseError("the answer holds commentary, not a query")
    return out


def _copied_run(query: str, doc_tokens_ngrams: set, n: int) -> bool:
    toks = normalize_query(query).split()
    return any(tuple(toks[i:i + n]) in doc_tokens_ngrams for i in range(len(toks) - n + 1))


def doc_ngrams(doc_text: str, n: int) -> set:
    toks = normalize_query(doc_text).split()
    return {tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)}


def parse_query(text: str, template: T.QueryTemplate, doc_text: str | None = None,
                _ngrams: set | None = None) -> dict:
    """Validate an answer for `template`: returns {"query": str, "how": json|label|text}.
    Raises ParseError (retryable: the client asks once more) when there is no usable query:
    empty, a refusal, a leftover placeholder, too short / too long, or (for templates with
    `max_copy_words`: keyword 6, question 12, reasoning 8) a query copying that many consecutive
    words of the document. Trailing commentary is cut first (`strip_commentary`)."""
    q, how = extract_query(text)
    q = strip_commentary(str(q).strip(), multiline=template.query_type == "reasoning")
    q = " ".join(q.split()).strip(_QUOTES + " ")
    if not q:
        raise ParseError("empty query")
    if _REFUSAL.match(q):
        raise ParseError(f"refusal instead of a query: {q[:80]!r}")
    if _PLACEHOLDER.search(q) or q in ("...", "<your query>"):
        raise ParseError(f"template placeholder left in the answer: {q[:80]!r}")
    words = len(q.split())
    if words < template.min_words:
        raise ParseError(f"{template.query_type} query too short ({words} words, need {template.min_words})")
    if len(q) > template.max_chars:
        raise ParseError(f"{template.query_type} query too long ({len(q)} chars > {template.max_chars})")
    if not any(ch.isalnum() for ch in q):
        raise ParseError("query has no letters or digits")
    n = template.max_copy_words
    if n and doc_text:
        grams = _ngrams if _ngrams is not None else doc_ngrams(doc_text, n)
        if _copied_run(q, grams, n):
            raise ParseError(f"query copies {n}+ consecutive words of the document")
    return {"query": q, "how": how}


def make_validator(template: T.QueryTemplate, doc_text: str) -> Callable[[str], dict]:
    grams = doc_ngrams(doc_text, template.max_copy_words) if template.max_copy_words else None

    def validate(text: str) -> dict:
        return parse_query(text, template, doc_text, grams)
    return validate


# --- document sampling -------------------------------------------------------------------------

def sample_documents(documents: pa.Table, n: int, *, strategy: str = "random", seed: int = 13,
                     strata: int = 5, min_chars: int = 0, exclude: Iterable[str] = ()) -> list[str]:
    """`n` document ids, seeded. `random`: uniform without replacement. `length_stratified`:
    documents binned into `strata` equal-count length bins (by text length rank) and `n` spread
    evenly over the bins (a bin short of documents gives its share to the others), so short and
    long documents are both represented whatever the length distribution. Documents shorter than
    `min_chars` or in `exclude` are never drawn. Order: the order drawn (deterministic)."""
    ids = [str(x) for x in documents.column("doc_id").to_pylist()]
    texts = documents.column("text").to_pylist()
    titles = documents.column("title").to_pylist() if "title" in documents.column_names else [None] * len(ids)
    ex = set(exclude)
    lengths = np.array([len(t or "") + len(ti or "") for t, ti in zip(texts, titles)], dtype=np.int64)
    elig = np.array([i for i in range(len(ids)) if lengths[i] >= min_chars and ids[i] not in ex], dtype=np.int64)
    rng = np.random.default_rng(seed)
    n = int(min(n, elig.shape[0]))
    if n <= 0:
        return []
    if strategy == "random":
        pick = rng.choice(elig, size=n, replace=False)
        return [ids[i] for i in pick]
    if strategy != "length_stratified":
        raise ValueError(f"unknown sampling strategy {strategy!r}")
    order = elig[np.lexsort((elig, lengths[elig]))]  # by length, ties by position
    bins = [b for b in np.array_split(order, max(1, min(strata, order.shape[0]))) if b.shape[0]]
    quota = [n // len(bins)] * len(bins)
    for i in rng.permutation(len(bins))[: n - sum(quota)]:
        quota[i] += 1
    # a bin with too few documents hands its surplus to bins that still have some
    while True:
        short = sum(max(0, q - b.shape[0]) for q, b in zip(quota, bins))
        quota = [min(q, b.shape[0]) for q, b in zip(quota, bins)]
        if not short:
            break
        room = [i for i, (q, b) in enumerate(zip(quota, bins)) if q < b.shape[0]]
        for j in range(short):
            quota[room[j % len(room)]] += 1
    picked: list[int] = []
    for q, b in zip(quota, bins):
        picked.extend(rng.choice(b, size=q, replace=False).tolist())
    picked = [picked[i] for i in rng.permutation(len(picked))]
    return [ids[i] for i in picked]


# --- requests and records ----------------------------------------------------------------------

def build_requests(docs: Sequence[Mapping[str, Any]], query_types: Sequence[str], *,
                   templates: Mapping[str, str] | None = None, max_doc_chars: int | None = 3000,
                   examples: Sequence[tuple[str, str]] = (), temperature: float | None = None,
                   max_tokens: int | None = None, seed: int | None = None) -> list[LLMRequest]:
    """One LLMRequest per (document, query type); docs are mappings with doc_id, text, title.
    `meta` = (doc_id, query_type, template key)."""
    reqs = []
    tpls = {qt: T.get(qt, (templates or {}).get(qt)) for qt in query_types}
    for d in docs:
        for qt in query_types:
            t = tpls[qt]
            reqs.append(LLMRequest(
                messages=t.messages(d.get("title"), d["text"], max_doc_chars=max_doc_chars, examples=examples),
                template_version=t.key, validate=make_validator(t, d["text"]),
                temperature=temperature, max_tokens=max_tokens or t.max_tokens, seed=seed,
                tag=f"queries.{qt}", meta=(str(d["doc_id"]), qt, t.key)))
    return reqs


def generated_id(query_type: str, doc_id: str) -> str:
    return f"gen-{query_type}-{doc_id}"


def _raw(text: str | None, limit: int = 2000) -> str:
    t = " ".join(str(text or "").split())
    return (t[:limit] + "…") if len(t) > limit else t


def result_records(results, *, collection: str, model: str) -> list[dict]:
    """QUERIES records from LLMResults of `build_requests` (meta = (doc_id, type, template))."""
    out = []
    for r in results:
        doc_id, qt, key = r.meta
        rec = {"query_id": generated_id(qt, doc_id), "collection": collection, "split": "generated",
               "source": "generated", "source_doc_id": doc_id, "generator_model": model,
               "template_version": key, "query_type": qt, "roundtrip_rank": None}
        if r.ok:
            rec.update(text=r.parsed["query"], decision="kept",
                       decision_detail=None if r.parsed.get("how") == "json" else f"parsed from {r.parsed['how']}")
        else:
            err = r.error or "failed"
            answered = err.startswith(("parse:", "validator error:")) or bool(r.text)
            rec.update(text=_raw(r.text) or "<no answer>",
                       decision="parse_error" if answered else "generation_failed",
                       decision_detail=_raw(err, 500))
        out.append(rec)
    return out


def generate_queries(documents: pa.Table, doc_ids: Sequence[str], client, query_types: Sequence[str], *,
                     collection: str = "", templates: Mapping[str, str] | None = None,
                     max_doc_chars: int | None = 3000, examples: Sequence[tuple[str, str]] = (),
                     temperature: float | None = None, max_tokens: int | None = None,
                     seed: int | None = None, progress=None) -> list[dict]:
    """Generate one query per (document in `doc_ids`, query type) with `client` (an LLMClient);
    returns QUERIES records in (document, type) order, failures included (see module doc)."""
    pos = {str(d): i for i, d in enumerate(documents.column("doc_id").to_pylist())}
    missing = [d for d in doc_ids if d not in pos]
    if missing:
        raise KeyError(f"unknown document id(s) {missing[:5]}")
    take = documents.take(pa.array([pos[d] for d in doc_ids], pa.int64()))
    docs = take.to_pylist()
    reqs = build_requests(docs, query_types, templates=templates, max_doc_chars=max_doc_chars,
                          examples=examples, temperature=temperature, max_tokens=max_tokens, seed=seed)
    results = client.map(reqs, progress=progress)
    return result_records(results, collection=collection, model=client.endpoint.model)


def few_shot_examples(queries: Sequence[Mapping[str, Any]], qrels: pa.Table | None, documents: pa.Table,
                      k: int, seed: int) -> list[tuple[str, str]]:
    """Up to `k` (query text, relevant document text) pairs from existing queries with a positive
    qrel, seeded (Promptagator-style few-shot examples)."""
    if k <= 0 or qrels is None or qrels.num_rows == 0:
        return []
    text = {str(d): t for d, t in zip(documents.column("doc_id").to_pylist(), documents.column("text").to_pylist())}
    pos: dict[str, str] = {}
    for q, d, g in zip(qrels.column("query_id").to_pylist(), qrels.column("doc_id").to_pylist(),
                       qrels.column("grade").to_pylist()):
        if g and g > 0 and q not in pos and str(d) in text:
            pos[q] = str(d)
    cands = [(r["text"], text[pos[r["query_id"]]]) for r in queries if r["query_id"] in pos]
    if not cands:
        return []
    rng = np.random.default_rng(seed)
    return [cands[i] for i in sorted(rng.choice(len(cands), size=min(k, len(cands)), replace=False))]
