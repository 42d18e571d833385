"""Pointwise scoring: one call per (query, document) with the pointwise prompt
(`grouprank.prompts.pointwise`), a 0–10 grade. Where the answer came with `top_logprobs`, the
grade is the expected value over the grade tokens (`prompts.pointwise.expected_grade`), else the
generated number."""
from __future__ import annotations

from collections.abc import Mapping

from grouprank.llm.types import ParseError
from grouprank.prompts import pointwise as T

from .call import Call, Scored, no_answer


class PointwiseMode:
    kind = "pointwise"
    template_version = T.TEMPLATE_VERSION

    def __init__(self, *, max_doc_chars: int = 3000):
        self.max_doc_chars = max_doc_chars

    def plan(self, pools: Mapping[str, list[str]], queries: Mapping[str, str],
             doc_text: Mapping[str, str]) -> list[Call]:
        """One call per (query, document), queries in `pools` order."""
        return [Call(qid, [did], T.build_messages(queries[qid], doc_text[did], self.max_doc_chars), T.parse,
                     response_schema=T.RESPONSE_SCHEMA)
                for qid, dids in pools.items() for did in dids]

    def parse(self, text: str | None, n: int = 1, logprobs: list | None = None) -> Scored:
        if text is None:
            return no_answer(1)
        try:
            score, reason = T.parse(text)
        except ParseError as e:
            return Scored([None], "unparsed", error=str(e))
        ev = T.expected_grade(logprobs, text)
        if ev is None:
            return Scored([float(score)], "ok", reason, via="generated")
        return Scored([float(ev[0])], "ok", reason, via="logprobs")
