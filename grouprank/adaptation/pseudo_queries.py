"""Pseudo-queries from a bare corpus, and the check that keeps trivial pairs out.

Each document yields up to `per_doc` queries of different kinds, one per *view* (view v holds every
document's v-th query, so within a view each document lost at most one span of text):

- ``title``: the title, when it has 3-30 words. Its positive is the document with every occurrence
  of the title removed (Cranfield repeats its title at the start of the text: kept, every positive
  would contain its query verbatim and the student learns to copy; measured 0.375 -> 0.364).
- ``lead``: without a title field, the leading phrase a double space sets off (NPL's abstracts open
  with their title that way), removed from the positive like a title.
- ``sentence``: a body sentence other than the first (the first often restates the title), 6-40
  words, cut to a random window of `window` words when longer (real queries are shorter than
  sentences); the whole sentence is removed from the positive (the inverse cloze task).
- ``span``: in a text with no sentence boundary at all, a `window`-word span from past its first
  quarter, removed from the positive.
- ``llm``: an LLM-generated question (`generated_view`, InPars / Promptagator style): abstractive, so
  its positive is the whole document; failed generations are counted, never turned into queries.

`trivial(query, positive)` flags a pair whose positive still holds most of the query verbatim
(longest common run of tokens >= `min_share` of the query's tokens and >= `min_run` tokens): e.g. a
title that the abstract repeats in its first sentence. Trivial pairs are neither trained on nor used
for validation (a held-out synthetic query a copy-matcher solves says nothing about a retriever).
"""
from __future__ import annotations

import difflib
import random
import re
from dataclasses import dataclass
from typing import Sequence

from grouprank.queries.extractive import sentences
from grouprank.text import document_text, strip_sentence

_TOK = re.compile(r"\w+", re.U)
_LOOSE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class PseudoQuery:
    query_id: str
    doc_id: str
    text: str
    kind: str  # "title" | "lead" | "sentence" | "span"
    positive: str  # the document's text without the query's source span
    trivial: bool


def tokens(text: str) -> list[str]:
    return _TOK.findall(str(text or "").lower())


def copied_run(query: str, positive: str) -> tuple[int, int]:
    """(longest run of consecutive query tokens found verbatim in `positive`, query token count)."""
    q, p = tokens(query), tokens(positive)
    if not q or not p:
        return 0, len(q)
    m = difflib.SequenceMatcher(None, q, p, autojunk=False).find_longest_match(0, len(q), 0, len(p))
    return int(m.size), len(q)


def trivial(query: str, positive: str, *, min_share: float = 0.6, min_run: int = 4) -> bool:
    """True when the positive still contains most of the query verbatim (see module docstring)."""
    run, n = copied_run(query, positive)
    return n > 0 and run >= min_run and run >= min_share * n


def _candidates(title: str | None, body: str, rng: random.Random, window: int) -> list[tuple[str, str, str]]:
    """(kind, query, removed span) candidates of one document, title first, sentences shuffled."""
    out = []
    t = " ".join(str(title or "").split())
    if t and 3 <= len(t.split()) <= 30:
        out.append(("title", t, t))
    elif "  " in str(body or "").strip():  # no title field, but a leading phrase set off by a double space (NPL)
        lead = " ".join(str(body).strip().split("  ")[0].split())
        if 3 <= len(lead.split()) <= 20:
            out.append(("lead", lead, lead))
    parts = sentences(body)
    if len(parts) < 2:  # lower-case corpora (Cranfield): split after . ! ? whatever follows
        parts = [" ".join(x.split()) for x in _LOOSE_END.split(str(body or "")) if x.strip()]
    ss = [s for s in parts[1:] if 6 <= len(s.split()) <= 40]
    rng.shuffle(ss)
    for s in ss:
        w = s.split()
        if len(w) > window + 4:
            i = rng.randrange(0, len(w) - window + 1)
            q = " ".join(w[i:i + window])
        else:
            q = s
        out.append(("sentence", q.strip(" ,;:"), s))
    if len(parts) < 2:  # no sentence boundary at all (unpunctuated abstracts): a span of the text
        w = str(body or "").split()
        if len(w) >= 2 * window:
            i = rng.randrange(len(w) // 4, len(w) - window + 1)
            q = " ".join(w[i:i + window])
            out.append(("span", q, q))
    return out


def make_pseudo_queries(doc_ids: Sequence[str], titles: Sequence[str | None], bodies: Sequence[str], *,
                        per_doc: int = 1, window: int = 12, seed: int = 13, min_positive_words: int = 8,
                        kinds: Sequence[str] = ("title", "lead", "sentence", "span")) -> list[list[PseudoQuery]]:
    """Views of pseudo-queries: views[v] has at most one query per document (its v-th). With
    `per_doc` 1 a document alternates between its title and a sentence (seeded), so both kinds
    are represented; with more, the title comes first. Positives shorter than
    `min_positive_words` words are skipped (nothing left to retrieve from)."""
    rng = random.Random(seed)
    views: list[list[PseudoQuery]] = [[] for _ in range(per_doc)]
    for d, ti, b in zip(doc_ids, titles, bodies):
        full = document_text(ti, b)
        cands = [c for c in _candidates(ti, b, rng, window) if c[0] in kinds]
        if per_doc == 1 and len(cands) > 1 and cands[0][0] in ("title", "lead") and rng.random() < 0.5:
            cands = cands[1:]
        v = 0
        for kind, q, removed in cands:
            if v >= per_doc:
                break
            pos = strip_sentence(full, removed)
            if pos == full and kind == "sentence":
                continue  # the span was not found as such (whitespace/markup): cannot remove it
            if len(pos.split()) < min_positive_words:
                continue
            views[v].append(PseudoQuery(f"pq{v}-{d}", str(d), q, kind, pos, trivial(q, pos)))
            v += 1
    return views


def generated_view(records, texts_by_id, view: int) -> tuple[list[PseudoQuery], dict]:
    """The kept LLM-generated queries (QUERIES records of `queries.generation.generate_queries`) as
    view `view`: the document's full text is the positive (nothing was extracted from it), the
    trivial check still applies (a question that pastes the document). -> (queries, counts by decision)."""
    out, counts = [], {}
    for r in records:
        counts[r["decision"]] = counts.get(r["decision"], 0) + 1
        if r["decision"] != "kept":
            continue
        d = str(r["source_doc_id"])
        full = texts_by_id[d]
        out.append(PseudoQuery(f"pq{view}-{d}", d, r["text"], "llm", full, trivial(r["text"], full)))
    counts["trivial"] = sum(q.trivial for q in out)
    return out, counts
