"""Pointwise LLM judge: one request per (query, document), a 0–10 score and a rationale
(prompt `grouprank.prompts.pointwise`)."""
from __future__ import annotations

from grouprank.prompts import pointwise as T

from .base import JudgePool, RowBuilder
from .llm_base import LLMJudge


class PointwiseJudge(LLMJudge):
    kind = "pointwise"
    template_version = T.TEMPLATE_VERSION

    def plan(self, pool: JudgePool):
        reqs = []
        for qid, dids in pool.pools.items():
            for did in dids:
                msgs = T.build_messages(pool.queries[qid], pool.docs[did], self.max_doc_chars)
                reqs.append(self.request(msgs, T.parse, (qid, did), T.RESPONSE_SCHEMA))
        return reqs

    def run(self, pool: JudgePool) -> list[dict]:
        reqs = self.plan(pool)
        results = self._map(reqs)
        rb = RowBuilder(self.info(), pool)
        for req, res in zip(reqs, results):
            qid, did = req.meta
            if res.ok:
                score, reason = res.parsed
                rb.add(qid, did, score=score, rationale=reason, request_hash=res.request_hash, status="ok",
                       prompt_tokens=res.prompt_tokens, completion_tokens=res.completion_tokens)
            else:
                rb.add(qid, did, request_hash=res.request_hash, status="failed", error=res.error,
                       prompt_tokens=res.prompt_tokens, completion_tokens=res.completion_tokens)
        return rb.rows
