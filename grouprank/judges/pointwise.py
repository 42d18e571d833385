"""Pointwise LLM judge: `grouprank.scoring.pointwise.PointwiseMode`, one request per (query,
document), a 0–10 grade and a rationale.

Grade: where the endpoint returns `top_logprobs` (asked for unless the endpoint has
`logprobs: false`), the expected value over the grade tokens 0–10 at the score's position, else
the generated number. `grading` counts both."""
from __future__ import annotations

from grouprank.prompts import pointwise as T
from grouprank.scoring.pointwise import PointwiseMode

from .base import JudgePool, RowBuilder
from .llm_base import LLMJudge


class PointwiseJudge(LLMJudge):
    kind = "pointwise"
    template_version = T.TEMPLATE_VERSION

    @property
    def mode(self) -> PointwiseMode:
        return PointwiseMode(max_doc_chars=self.max_doc_chars)

    def requests(self, calls):
        lp = T.TOP_LOGPROBS if getattr(self.client.endpoint, "logprobs", False) else None
        reqs = super().requests(calls)
        for r in reqs:
            r.top_logprobs = lp
        return reqs

    def run(self, pool: JudgePool) -> list[dict]:
        mode = self.mode
        calls = mode.plan(pool.pools, pool.queries, pool.docs)
        self.grading = {"logprobs": 0, "generated": 0}
        rb = RowBuilder(self.info(), pool)
        for call, res in zip(calls, self._map(self.requests(calls))):
            qid, did = call.query_id, call.doc_ids[0]
            sc = mode.parse(res.text, 1, res.logprobs)
            tokens = dict(request_hash=res.request_hash, prompt_tokens=res.prompt_tokens,
                          completion_tokens=res.completion_tokens)
            if sc.scores[0] is not None:
                self.grading[sc.via] += 1
                rb.add(qid, did, score=sc.scores[0], rationale=sc.reason, status="ok", **tokens)
            else:
                rb.add(qid, did, status="failed", error=res.error or sc.error, **tokens)
        return rb.rows
