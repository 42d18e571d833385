"""Listwise LLM judge (RankGPT style, prompt `grouprank.prompts.listwise`): rank the whole pool in
one request when its prompt fits `context_budget_tokens` (estimated as characters/4), else a
sliding window of `window` documents moved bottom-up by `stride` (`grouprank.scoring.windows`;
the last window is the top of the list), each window re-ordering its slice of the running list.
Queries advance in lock-step, one window per step, so a step's windows are sent together under
the client's concurrency bound.

Rows: one per (query, document) with `rank` = position in the final list among the documents
that some answer placed (1 = most relevant).

Failures: a window whose answer misses documents or names unknown ones is asked once more (the
client's parse retry); if it still fails, the valid part of the last answer (labels in the order
given, first occurrence) is applied and the window's other documents keep their relative order
after them. A document that no answer placed — in any window it sat in — is recorded as failed
with the reason; a document placed by at least one window is ok (with a sliding window a later
failed window only leaves it where the earlier one put it).
"""
from __future__ import annotations

from grouprank.prompts import listwise as T
from grouprank.scoring.windows import sliding_windows

from .base import JudgePool, RowBuilder, apportion
from .llm_base import LLMJudge


class ListwiseJudge(LLMJudge):
    kind = "listwise"
    template_version = T.TEMPLATE_VERSION

    def windows_for(self, pool: JudgePool, qid: str) -> list[tuple[int, int]]:
        dids = pool.pools[qid]
        n = len(dids)
        msgs = T.build_messages(pool.queries[qid], [pool.docs[d] for d in dids], self.max_doc_chars)
        est = sum(len(m["content"]) for m in msgs) // 4
        if est <= self.spec.context_budget_tokens:
            return [(0, n)]
        return sliding_windows(n, self.spec.window, self.spec.stride)

    def _req(self, pool: JudgePool, qid: str, doc_ids: list[str], meta):
        msgs = T.build_messages(pool.queries[qid], [pool.docs[d] for d in doc_ids], self.max_doc_chars)
        return self.request(msgs, T.validator(len(doc_ids)), meta)

    def plan(self, pool: JudgePool):
        reqs = []
        for qid, dids in pool.pools.items():
            for wi, (s, e) in enumerate(self.windows_for(pool, qid)):
                reqs.append(self._req(pool, qid, dids[s:e], (qid, wi, s, e)))
        return reqs

    def run(self, pool: JudgePool) -> list[dict]:
        order = {q: list(d) for q, d in pool.pools.items()}
        wins = {q: self.windows_for(pool, q) for q in pool.pools}
        placed: dict[str, dict[str, tuple[str, str]]] = {q: {} for q in pool.pools}  # did -> (hash, window)
        last_err: dict[tuple[str, str], tuple[str, str, str]] = {}  # (q, d) -> (reason, hash, window)
        pt: dict[tuple[str, str], int] = {}
        ct: dict[tuple[str, str], int] = {}
        steps = max((len(w) for w in wins.values()), default=0)
        total_calls = sum(len(w) for w in wins.values())
        sent = 0
        for k in range(steps):
            reqs = []
            for qid, ws in wins.items():
                if k < len(ws):
                    s, e = ws[k]
                    reqs.append(self._req(pool, qid, order[qid][s:e], (qid, k, s, e)))
            results = self._map(reqs, sent, total_calls)
            sent += len(reqs)
            for req, res in zip(reqs, results):
                qid, wi, s, e = req.meta
                docs = order[qid][s:e]
                gid = f"w{wi}"
                if res.ok:
                    perm, problems = res.parsed, []
                else:
                    perm, problems = T.parse_partial(res.text, len(docs))
                new = [docs[i - 1] for i in perm]
                got = set(new)
                rest = [d for d in docs if d not in got]
                order[qid][s:e] = new + rest
                for d in new:
                    placed[qid][d] = (res.request_hash, gid)
                reason = (f"not placed by the listwise answer for window {gid}: {res.error}" if not res.ok
                          else "")
                for d in rest:
                    last_err[(qid, d)] = (reason, res.request_hash, gid)
                for d, a, b in zip(docs, apportion(res.prompt_tokens, len(docs)),
                                   apportion(res.completion_tokens, len(docs))):
                    pt[(qid, d)] = pt.get((qid, d), 0) + (a or 0)
                    ct[(qid, d)] = ct.get((qid, d), 0) + (b or 0)
        rb = RowBuilder(self.info(), pool)
        for qid, lst in order.items():
            r = 0
            for d in lst:
                key = (qid, d)
                if d in placed[qid]:
                    r += 1
                    h, gid = placed[qid][d]
                    rb.add(qid, d, group_id=gid, rank=r, request_hash=h, status="ok",
                           prompt_tokens=pt.get(key), completion_tokens=ct.get(key))
                else:
                    reason, h, gid = last_err.get(key, ("never sent", "", ""))
                    rb.add(qid, d, group_id=gid or None, request_hash=h, status="failed", error=reason,
                           prompt_tokens=pt.get(key), completion_tokens=ct.get(key))
        return rb.rows
