"""What a scoring mode hands its consumers: the calls it plans and the scores it reads back.

Failure policy (the same for every mode and both consumers, the judges and the reranker):
an answer is read for every document it scores validly, whatever else is wrong with it (salvage
what parses: the valid entries of a groupwise answer with a bad entry, the labels a listwise
answer did place). A document the answer gives no valid score — all documents of a call that
returned no answer — gets no score from that call (`None`). What then happens is the consumer's,
stated once each: the judge writes the document as a failed judgment with the reason (the
fusion ignores it); the reranker gives it `FALLBACK_SCORE` for that call (groupwise, pointwise),
or, listwise, leaves it in its running order after the documents the answer placed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

FALLBACK_SCORE = 0.0  # the reranker's score for a document its answer did not score (the authors' fallback)


@dataclass
class Call:
    """One planned LLM request of a scoring mode."""
    query_id: str
    doc_ids: list[str]                      # prompt order: label [i] is doc_ids[i - 1]
    messages: list[dict]
    validate: Callable[[str], Any]          # the LLM client's check (raises ParseError: asked once more)
    group_id: str = ""                      # groupwise "p<pass>g<i>", listwise "w<i>", pointwise ""
    pass_index: int = 0
    span: tuple[int, int] | None = None     # listwise: the window's [start, end) in the running list
    response_schema: dict | None = None     # pointwise: the JSON schema the endpoint may enforce


@dataclass
class Scored:
    """One answer read by its mode: a score per document of the call (prompt order; `None` = no
    valid score in this answer), the mode's status ("ok" = fully valid), the model's reason and
    what was wrong. Scales: pointwise and groupwise 0–10; listwise n − position in the answer
    (higher = ranked higher)."""
    scores: list[float | None]
    status: str
    reason: str | None = None
    error: str | None = None
    via: str | None = None                  # pointwise: "logprobs" or "generated" (how the grade was read)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


NO_ANSWER = "call_failed"  # the status of a call that returned no text


def no_answer(n: int) -> Scored:
    return Scored([None] * n, NO_ANSWER, error="no answer")
