"""Listwise scoring (RankGPT; prompt `grouprank.prompts.listwise`): rank a query's list in one
call when it fits (`context_budget_tokens`, estimated as prompt characters / 4; without a budget
always windows), else sliding windows of `window` documents moved bottom-up by `stride`
(`windows.sliding_windows`; the last window is the top of the list). Each answer reorders its
window of the running list: the documents it placed, in its order, then the others in their
order. Queries advance in lock-step, one window each per step, so a step's calls go out together.

`ListwiseRun` is the one sliding-window loop; the judge and the reranker drive it:

    run = mode.start(pools, queries, doc_text)
    for calls in run.steps():           # built from the running order
        for call, text in zip(calls, answers_of(calls)):
            scored, placed, rest = run.apply(call, text)
    run.order                           # {query_id: final list}
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping

from grouprank.prompts import listwise as T

from .call import Call, Scored, no_answer
from .windows import sliding_windows


class ListwiseMode:
    kind = "listwise"
    template_version = T.TEMPLATE_VERSION

    def __init__(self, *, window: int, stride: int, context_budget_tokens: int | None = None,
                 max_doc_chars: int = 3000):
        self.window, self.stride, self.budget, self.max_doc_chars = window, stride, context_budget_tokens, max_doc_chars

    def messages(self, query: str, doc_ids: list[str], doc_text: Mapping[str, str]) -> list[dict]:
        return T.build_messages(query, [doc_text[d] for d in doc_ids], self.max_doc_chars)

    def windows(self, query: str, doc_ids: list[str], doc_text: Mapping[str, str]) -> list[tuple[int, int]]:
        """[start, end) windows of one query's list: the whole list when its prompt fits the budget."""
        if self.budget is not None:
            est = sum(len(m["content"]) for m in self.messages(query, doc_ids, doc_text)) // 4
            if est <= self.budget:
                return [(0, len(doc_ids))]
        return sliding_windows(len(doc_ids), self.window, self.stride)

    def call(self, query_id: str, query: str, doc_ids: list[str], doc_text: Mapping[str, str], wi: int,
             span: tuple[int, int]) -> Call:
        return Call(query_id, doc_ids, self.messages(query, doc_ids, doc_text), T.validator(len(doc_ids)),
                    f"w{wi}", 0, span)

    def plan(self, pools: Mapping[str, list[str]], queries: Mapping[str, str],
             doc_text: Mapping[str, str]) -> list[Call]:
        """The calls a run would send (dry run). Later windows depend on earlier answers; the plan
        uses the candidate order: the same calls and (nearly) the same token counts."""
        return [self.call(qid, queries[qid], dids[s:e], doc_text, wi, (s, e))
                for qid, dids in pools.items()
                for wi, (s, e) in enumerate(self.windows(queries[qid], dids, doc_text))]

    def parse(self, text: str | None, n: int) -> Scored:
        """Score n − j for the label at answer position j (first occurrence, known labels only);
        None for the documents the answer did not place."""
        if text is None:
            return no_answer(n)
        order, problems = T.parse_partial(text, n)
        scores: list[float | None] = [None] * n
        for j, label in enumerate(order):
            scores[label - 1] = float(n - j)
        status = "ok" if not problems else ("partial" if order else "unparsed")
        return Scored(scores, status, error="; ".join(problems) or None)

    def start(self, pools: Mapping[str, list[str]], queries: Mapping[str, str],
              doc_text: Mapping[str, str]) -> "ListwiseRun":
        return ListwiseRun(self, pools, queries, doc_text)


class ListwiseRun:
    """The sliding-window loop over many queries (see the module docstring)."""

    def __init__(self, mode: ListwiseMode, pools, queries, doc_text):
        self.mode, self.queries, self.doc_text = mode, queries, doc_text
        self.order = {q: list(d) for q, d in pools.items()}
        self.windows = {q: mode.windows(queries[q], d, doc_text) for q, d in self.order.items()}
        self.total_calls = sum(len(w) for w in self.windows.values())

    def steps(self) -> Iterator[list[Call]]:
        for k in range(max((len(w) for w in self.windows.values()), default=0)):
            yield [self.mode.call(q, self.queries[q], self.order[q][s:e], self.doc_text, k, (s, e))
                   for q, ws in self.windows.items() if k < len(ws) for s, e in [ws[k]]]

    def apply(self, call: Call, text: str | None) -> tuple[Scored, list[str], list[str]]:
        """Reorder the call's window by its answer -> (scored, placed documents in answer order,
        the others in their running order)."""
        scored = self.mode.parse(text, len(call.doc_ids))
        ranked = sorted((-s, i) for i, s in enumerate(scored.scores) if s is not None)
        placed = [call.doc_ids[i] for _, i in ranked]
        got = set(placed)
        rest = [d for d in call.doc_ids if d not in got]
        s, e = call.span
        self.order[call.query_id][s:e] = placed + rest
        return scored, placed, rest
