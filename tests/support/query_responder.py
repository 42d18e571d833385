"""A deterministic, extractive stand-in for an LLM answering the query-generation prompts.

It does NOT understand documents: it picks the document's most salient content words (term
frequency, title words, word length) and fills fixed sentence frames with them. It exists so that
query generation can run end to end through the real HTTP path (LLMClient -> local OpenAI-
compatible server -> this function) in tests and offline smoke runs, and so that the round-trip
filter has queries that are plausibly (not perfectly) retrievable. Numbers measured with it say
nothing about the quality of LLM-generated queries.

    python -m tests.support.fake_openai_server --responder tests.support.query_responder:respond

Per query type (read from the prompt's ``Query type: <type>`` line; the document is the block
between ``<document>`` and ``</document>`` lines):
- keyword: the 4 top-scoring content words;
- question: a question frame around 2-3 of them ("How does A affect B?");
- reasoning: an 80+ word first-person post built from frames and single keywords, so it never
  copies a run of document words (the reasoning template's parser rejects 8+ copied words).

Answers are JSON, in a few shapes chosen by a hash of the prompt (bare object, prose + fenced
block, another key name) to exercise the tolerant parser. Fault options ride on the request's
model name, e.g. ``extractive?garbage=0.2&copy=0.1``: that fraction of prompts (by hash, so the
same prompt always fails the same way) gets a refusal instead of JSON (`garbage`), or a reasoning
post that pastes a long document span (`copy`): both end as parse errors in the mined table.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from urllib.parse import parse_qsl

_DOC = re.compile(r"<document>\n(.*?)\n</document>", re.S)
_TYPE = re.compile(r"^Query type:\s*(\w+)", re.M)
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9\-]{2,}")
STOPWORDS = frozenset("""
a about above after again against all also although am among an and any are as at be because been
before being below between both but by can could did do does doing down during each either few for
from further had has have having he her here hers herself him himself his how however i if in into
is it its itself just least less many may me might more most much must my myself no nor not now of
off on once only or other our ours ourselves out over own per same she should since so some such than
that the their theirs them themselves then there therefore these they this those through thus to too
under until up upon very was we were what when where whether which while who whom why will with
within without would yet you your yours yourself yourselves
using used use study studies studied results result showed show shows found find data analysis
based method methods conclusion conclusions background objective objectives among associated
significantly significant compared patients patient group groups total including included role
effect effects within well however although one two three four five first second new may
""".split())


def _h(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "big")


def _last_user(messages: list[dict]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user" and isinstance(m.get("content"), str):
            return m["content"]
    return ""


def keywords(title: str, text: str, k: int = 6) -> list[str]:
    """The document's top-k content words: tf + 2 if in the title + a small bonus for long words;
    ties by first occurrence. Lowercased, deduplicated."""
    words = [w.lower().strip("-") for w in _WORD.findall(f"{title} {text}")]
    words = [w for w in words if w not in STOPWORDS and not w.isdigit() and len(w) >= 3]
    if not words:
        return []
    tf = Counter(words)
    in_title = {w.lower() for w in _WORD.findall(title or "")}
    first = {}
    for i, w in enumerate(words):
        first.setdefault(w, i)
    score = {w: tf[w] + 2.0 * (w in in_title) + min(len(w), 12) / 12.0 for w in tf}
    return sorted(score, key=lambda w: (-score[w], first[w]))[:k]


_QUESTIONS = (
    "How does {a} affect {b}?",
    "What is the role of {a} in {b}?",
    "Is {a} associated with {b} and {c}?",
    "What is known about {a} and {b}?",
    "Why does {a} matter for {b}?",
)

_POST = (
    "I have been trying to make sense of something related to {a} and I keep getting stuck.",
    "In my own situation there is a clear connection with {b}, at least that is how it looks from the outside.",
    "Several people told me that {c} is part of the story, but nobody could explain the mechanism to me.",
    "I also noticed that {d} comes up whenever I try to read more about it, which confuses me even more.",
    "My naive expectation was that these things would be independent of each other, yet what I observe suggests otherwise.",
    "I am not an expert, so I may be mixing up cause and effect here.",
    "Could someone explain how {a} and {b} are actually linked, and whether {e} plays any part in it?",
)


def _answer(query: str, prompt_hash: int, qtype: str) -> str:
    shape = prompt_hash % 3
    if shape == 0:
        return json.dumps({"query": query})
    if shape == 1:
        return f"Here is a {qtype} query for the document:\n```json\n{json.dumps({'query': query}, indent=2)}\n```"
    key = {"question": "question", "reasoning": "post"}.get(qtype, "query")
    return json.dumps({key: query}, ensure_ascii=False)


def _options(body: dict) -> dict[str, float]:
    model = str((body or {}).get("model") or "")
    if "?" not in model:
        return {}
    out = {}
    for k, v in parse_qsl(model.split("?", 1)[1]):
        try:
            out[k] = float(v)
        except ValueError:
            pass
    return out


def generate(qtype: str, title: str, text: str, salt: str = "") -> str:
    """The query this stand-in writes for a document (no JSON wrapping)."""
    kw = keywords(title, text) or ["this", "topic"]
    kw = (kw * 6)[:6]
    a, b, c, d, e = kw[:5]
    if qtype == "keyword":
        return " ".join(dict.fromkeys(kw[:4]))
    if qtype == "question":
        frame = _QUESTIONS[_h(salt, title, text[:200]) % len(_QUESTIONS)]
        return frame.format(a=a, b=b, c=c)
    post = " ".join(s.format(a=a, b=b, c=c, d=d, e=e) for s in _POST)
    return post


def respond(messages: list[dict], body: dict) -> str:
    """Local server responder (see module doc)."""
    user = _last_user(messages)
    m = _DOC.findall(user)
    t = _TYPE.search(user)
    if not m or not t:
        return "I can only write queries for a prompt with a <document> block and a 'Query type:' line."
    doc = m[-1]
    title, _, rest = doc.partition("\n")
    if not rest:
        title, rest = "", doc
    qtype = t.group(1).lower()
    ph = _h(user)
    opts = _options(body)
    u = (ph % 10_000) / 10_000
    if u < opts.get("garbage", 0.0):
        return "I'm sorry, but I can't help with writing that query."
    if qtype == "reasoning" and u < opts.get("garbage", 0.0) + opts.get("copy", 0.0):
        words = rest.split()
        return json.dumps({"query": "I read that " + " ".join(words[:40]) + " Is that right?"})
    return _answer(generate(qtype, title, rest), ph // 10_000, qtype)


def matches(messages: list[dict]) -> bool:
    """Is this a query-generation prompt (grouprank.queries.templates)?"""
    from grouprank.queries.templates import SYSTEM
    sys_msg = next((m.get("content") for m in messages if m.get("role") == "system"), None)
    user = _last_user(messages)
    return sys_msg == SYSTEM or (bool(_TYPE.search(user)) and bool(_DOC.search(user)))


# one server for judges and query generation: register with the judges' responder registry
# (tests.support.judge_responder imports this module on first use; importing it here is cheap)
try:
    from tests.support.judge_responder import register as _register
except ImportError:  # pragma: no cover - judges package absent
    pass
else:
    _register("queries", matches, lambda messages, body, fault=None: respond(messages, body))
