"""Pointwise LLM judge: one request per (query, document), a 0–10 score and a rationale
(prompt `grouprank.prompts.pointwise`).

Grade: where the endpoint returns `top_logprobs` (asked for unless the endpoint has
`logprobs: false`), the expected value over the grade tokens 0–10 at the score's position
(`prompts.pointwise.expected_grade`), else the generated number. `grading` counts both."""
from __future__ import annotations

from grouprank.prompts import pointwise as T

from .base import JudgePool, RowBuilder
from .llm_base import LLMJudge


class PointwiseJudge(LLMJudge):
    kind = "pointwise"
    template_version = T.TEMPLATE_VERSION

    def plan(self, pool: JudgePool):
        lp = T.TOP_LOGPROBS if getattr(self.client.endpoint, "logprobs", False) else None
        reqs = []
        for qid, dids in pool.pools.items():
            for did in dids:
                msgs = T.build_messages(pool.queries[qid], pool.docs[did], self.max_doc_chars)
                req = self.request(msgs, T.parse, (qid, did), T.RESPONSE_SCHEMA)
                req.top_logprobs = lp
                reqs.append(req)
        return reqs

    def grade(self, res) -> float:
        """The grade of an ok answer: expected value over the grade tokens when the answer came
        with log-probabilities, else the generated number."""
        score, _ = res.parsed
        ev = T.expected_grade(res.logprobs, res.text)
        if ev is None:
            self.grading["generated"] += 1
            return float(score)
        self.grading["logprobs"] += 1
        return float(ev[0])

    def run(self, pool: JudgePool) -> list[dict]:
        reqs = self.plan(pool)
        results = self._map(reqs)
        self.grading = {"logprobs": 0, "generated": 0}
        rb = RowBuilder(self.info(), pool)
        for req, res in zip(reqs, results):
            qid, did = req.meta
            if res.ok:
                _, reason = res.parsed
                rb.add(qid, did, score=self.grade(res), rationale=reason, request_hash=res.request_hash, status="ok",
                       prompt_tokens=res.prompt_tokens, completion_tokens=res.completion_tokens)
            else:
                rb.add(qid, did, request_hash=res.request_hash, status="failed", error=res.error,
                       prompt_tokens=res.prompt_tokens, completion_tokens=res.completion_tokens)
        return rb.rows
