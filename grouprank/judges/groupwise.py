"""Groupwise LLM judge (GroupRank format): `grouprank.scoring.groupwise.GroupwiseMode` plans the
groups (seeded by the judge's seed, query id and pass: the reranker's groups for the same seed)
and reads the answers; several passes reshuffle and rescore, and the fusion averages a
document's scores over its ok passes.

Failures (`grouprank.scoring.call`): an answer that is not fully valid is asked once more (the
client's parse retry); if it still fails, the documents whose scores can be read from a
well-tagged answer (status bad_json: e.g. all but a mislabelled one) keep them, and the others are
recorded as failed with the reason.
"""
from __future__ import annotations

from grouprank.prompts import groupwise as T
from grouprank.scoring.groupwise import GroupwiseMode

from .base import JudgePool, RowBuilder
from .llm_base import LLMJudge, add_group_rows


class GroupwiseJudge(LLMJudge):
    kind = "groupwise"
    template_version = T.JUDGE_TEMPLATE_VERSION

    @property
    def mode(self) -> GroupwiseMode:
        if self.spec.seed is None:  # the runner gives every judge the run's seed
            raise ValueError(f"groupwise judge {self.spec.id!r} has no seed (judges.runner.judge_specs sets the "
                             "run's seed)")
        return GroupwiseMode(group_size=self.spec.group_size, passes=self.spec.passes, seed=self.spec.seed,
                             max_doc_chars=self.max_doc_chars)

    def run(self, pool: JudgePool) -> list[dict]:
        mode = self.mode
        calls = mode.plan(pool.pools, pool.queries, pool.docs)
        rb = RowBuilder(self.info(), pool)
        for call, res in zip(calls, self._map(self.requests(calls))):
            sc = mode.parse(res.text, len(call.doc_ids))
            add_group_rows(rb, res, call.query_id, call.doc_ids, sc.scores, pass_index=call.pass_index,
                           group_id=call.group_id, rationale=_short(sc.reason),
                           missing_reason=f"no valid score for this document in the group's answer: {res.error}")
        return rb.rows


def _short(reason: str | None, n: int = 1000) -> str | None:
    if not reason:
        return None
    r = " ".join(reason.split())
    return r if len(r) <= n else r[:n] + "…"
