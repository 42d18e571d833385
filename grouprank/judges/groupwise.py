"""Groupwise LLM judge (GroupRank format, prompt `grouprank.prompts.groupwise`).

Per query and pass: shuffle the pool (seeded by judge seed, query id and pass), cut it into
ceil(N/c) disjoint groups of near-equal size (sizes differ by at most one, so no tiny last group),
score every group in one request. Several passes reshuffle and rescore; the fusion averages a
document's scores over its ok passes.

Failures: an answer that is not fully valid is asked once more (the client's parse retry); if it
still fails, the documents whose scores can be read from a well-tagged answer (status bad_json:
e.g. all but a mislabelled one) keep them, and the others are recorded as failed with the reason.
"""
from __future__ import annotations

import random

from grouprank.prompts import groupwise as T
from grouprank.scoring.groups import shuffled_groups

from .base import JudgePool, RowBuilder
from .llm_base import LLMJudge, add_group_rows


def judge_groups(doc_ids: list[str], c: int, seed: int, query_id: str, pass_index: int) -> list[list[str]]:
    """The judge's groups of one query and pass: `shuffled_groups` seeded by
    "seed|query_id|pass_index"."""
    return shuffled_groups(doc_ids, c, random.Random(f"{seed}|{query_id}|{pass_index}"))


class GroupwiseJudge(LLMJudge):
    kind = "groupwise"
    template_version = T.JUDGE_TEMPLATE_VERSION

    def _groups(self, pool: JudgePool):
        if self.spec.seed is None:  # the runner gives every judge the run's seed; None would seed "None|..."
            raise ValueError(f"groupwise judge {self.spec.id!r} has no seed (judges.runner.judge_specs sets the "
                             "run's seed)")
        for p in range(self.spec.passes):
            for qid, dids in pool.pools.items():
                for gi, grp in enumerate(judge_groups(dids, self.spec.group_size, self.spec.seed, qid, p)):
                    yield p, qid, gi, grp

    def plan(self, pool: JudgePool):
        reqs = []
        for p, qid, gi, grp in self._groups(pool):
            msgs = T.build_messages(pool.queries[qid], [pool.docs[d] for d in grp], self.max_doc_chars)
            reqs.append(self.request(msgs, T.validator(len(grp)), (p, qid, gi, grp)))
        return reqs

    def run(self, pool: JudgePool) -> list[dict]:
        reqs = self.plan(pool)
        results = self._map(reqs)
        rb = RowBuilder(self.info(), pool)
        for req, res in zip(reqs, results):
            p, qid, gi, grp = req.meta
            gid = f"p{p}g{gi}"
            if res.ok:
                pg = res.parsed
                add_group_rows(rb, res, qid, grp, pg.scores, pass_index=p, group_id=gid,
                               rationale=_short(pg.reason), missing_reason="")
            else:
                scores, reason, status = T.partial_scores(res.text, len(grp))
                add_group_rows(rb, res, qid, grp, scores, pass_index=p, group_id=gid,
                               rationale=_short(reason),
                               missing_reason=f"no valid score for this document in the group's answer: {res.error}")
        return rb.rows


def _short(reason: str | None, n: int = 1000) -> str | None:
    if not reason:
        return None
    r = " ".join(reason.split())
    return r if len(r) <= n else r[:n] + "…"
