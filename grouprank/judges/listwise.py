"""Listwise LLM judge (RankGPT style): `grouprank.scoring.listwise.ListwiseMode` with the judge's
`context_budget_tokens` (the whole pool in one request when it fits, else sliding windows), driven
by the mode's one sliding-window loop (`ListwiseRun`): a step's windows are sent together under
the client's concurrency bound.

Rows: one per (query, document) with `rank` = position in the final list among the documents
that some answer placed (1 = most relevant).

Failures (`grouprank.scoring.call`): a window whose answer misses documents or names unknown ones
is asked once more (the client's parse retry); if it still fails, the valid part of the last
answer (labels in the order given, first occurrence) is applied and the window's other documents
keep their relative order after them. A document that no answer placed — in any window it sat in —
is recorded as failed with the reason; a document placed by at least one window is ok (with a
sliding window a later failed window only leaves it where the earlier one put it).
"""
from __future__ import annotations

from grouprank.prompts import listwise as T
from grouprank.scoring.listwise import ListwiseMode

from .base import JudgePool, RowBuilder, apportion
from .llm_base import LLMJudge


class ListwiseJudge(LLMJudge):
    kind = "listwise"
    template_version = T.TEMPLATE_VERSION

    @property
    def mode(self) -> ListwiseMode:
        return ListwiseMode(window=self.spec.window, stride=self.spec.stride,
                            context_budget_tokens=self.spec.context_budget_tokens, max_doc_chars=self.max_doc_chars)

    def run(self, pool: JudgePool) -> list[dict]:
        run = self.mode.start(pool.pools, pool.queries, pool.docs)
        placed: dict[tuple[str, str], tuple[str, str]] = {}    # (q, d) -> (hash, window)
        last_err: dict[tuple[str, str], tuple[str, str, str]] = {}  # (q, d) -> (reason, hash, window)
        tokens: dict[tuple[str, str], list[int]] = {}
        sent = 0
        for calls in run.steps():
            results = self._map(self.requests(calls), sent, run.total_calls)
            sent += len(calls)
            for call, res in zip(calls, results):
                qid, gid = call.query_id, call.group_id
                _, got, rest = run.apply(call, res.text)
                for d in got:
                    placed[(qid, d)] = (res.request_hash, gid)
                reason = "" if res.ok else f"not placed by the listwise answer for window {gid}: {res.error}"
                for d in rest:
                    last_err[(qid, d)] = (reason, res.request_hash, gid)
                for d, a, b in zip(call.doc_ids, apportion(res.prompt_tokens, len(call.doc_ids)),
                                   apportion(res.completion_tokens, len(call.doc_ids))):
                    t = tokens.setdefault((qid, d), [0, 0])
                    t[0] += a or 0
                    t[1] += b or 0
        rb = RowBuilder(self.info(), pool)
        for qid, lst in run.order.items():
            r = 0
            for d in lst:
                pt, ct = tokens.get((qid, d), (None, None))
                if (qid, d) in placed:
                    r += 1
                    h, gid = placed[(qid, d)]
                    rb.add(qid, d, group_id=gid, rank=r, request_hash=h, status="ok", prompt_tokens=pt,
                           completion_tokens=ct)
                else:
                    reason, h, gid = last_err.get((qid, d), ("never sent", "", ""))
                    rb.add(qid, d, group_id=gid or None, request_hash=h, status="failed", error=reason,
                           prompt_tokens=pt, completion_tokens=ct)
        return rb.rows
