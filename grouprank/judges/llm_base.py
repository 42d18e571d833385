"""Shared plumbing of the LLM judges (pointwise, listwise, groupwise)."""
from __future__ import annotations

from typing import Callable

from grouprank.llm.types import LLMRequest, LLMResult

from .base import JudgeInfo, JudgePool, RowBuilder, apportion


class LLMJudge:
    """Base of the LLM judges. `client` is a grouprank.llm.LLMClient (or anything with the same
    `map(requests, progress)` and `endpoint`); `spec` a grouprank.config.JudgeSpec."""

    kind = ""
    template_version = ""

    def __init__(self, spec, client, *, progress: Callable[[int, int], None] | None = None,
                 max_doc_chars: int = 3000):
        """`max_doc_chars`: documents are cut to this many characters in prompts (`prompts.max_doc_chars`)."""
        if spec.kind != self.kind:
            raise ValueError(f"judge {spec.id!r} is of kind {spec.kind!r}, not {self.kind!r}")
        self.spec = spec
        self.client = client
        self.progress = progress
        self.max_doc_chars = max_doc_chars

    @property
    def model(self) -> str:
        return str(self.client.endpoint.model)

    def info(self) -> JudgeInfo:
        return JudgeInfo(self.spec.id, self.kind, self.model, self.template_version)

    def requests(self, calls) -> list[LLMRequest]:
        """The LLM requests of a scoring mode's calls (`grouprank.scoring.call.Call`, kept as `meta`)."""
        return [LLMRequest(messages=c.messages, template_version=self.template_version,
                           response_schema=c.response_schema, validate=c.validate,
                           temperature=self.spec.temperature, max_tokens=self.spec.max_tokens,
                           tag=self.spec.id, meta=c) for c in calls]

    # --- to implement
    @property
    def mode(self):
        """The scoring mode (`grouprank.scoring`) this judge drives."""
        raise NotImplementedError

    def plan(self, pool: JudgePool) -> list[LLMRequest]:
        """The requests the judge would send (dry run; listwise: see `ListwiseMode.plan`)."""
        return self.requests(self.mode.plan(pool.pools, pool.queries, pool.docs))

    def run(self, pool: JudgePool) -> list[dict]:
        raise NotImplementedError

    def _map(self, reqs: list[LLMRequest], offset: int = 0, total: int | None = None) -> list[LLMResult]:
        """Send the requests; progress is reported in requests: (offset + done, total)."""
        if not reqs:
            return []
        cb = None
        if self.progress is not None:
            tot = total if total is not None else offset + len(reqs)
            cb = lambda done, n: self.progress(offset + done, tot)  # noqa: E731
        return self.client.map(reqs, cb)


def add_group_rows(rb: RowBuilder, res: LLMResult, qid: str, doc_ids: list[str], scores: list,
                   *, pass_index: int, group_id: str, rationale: str | None, missing_reason: str) -> None:
    """One judgment row per document of a judged group. Each row's `group_id` is
    ``<group_id>#<position>`` (1-based position of the document in the prompt, i.e. its label
    ``[position]``): the rows of a group share the part before ``#``, and the prompt order can be
    rebuilt from the rows (the contract `grouprank.trainsets.reranker.teacher_groups` reads)."""
    pts = apportion(res.prompt_tokens, len(doc_ids))
    cts = apportion(res.completion_tokens, len(doc_ids))
    for i, did in enumerate(doc_ids):
        s = scores[i] if i < len(scores) else None
        gid = f"{group_id}#{i + 1}"
        if s is None:
            rb.add(qid, did, pass_index=pass_index, group_id=gid, request_hash=res.request_hash,
                   status="failed", error=missing_reason, prompt_tokens=pts[i], completion_tokens=cts[i])
        else:
            rb.add(qid, did, pass_index=pass_index, group_id=gid, score=float(s), rationale=rationale,
                   request_hash=res.request_hash, status="ok", prompt_tokens=pts[i], completion_tokens=cts[i])
