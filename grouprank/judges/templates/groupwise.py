"""Groupwise judge template: the GroupRank prompt of `grouprank.reranker.prompt`, reused as is
(groups of c documents [1]..[c]; `<reason>` then `<answer>` with a JSON map of 0–10 scores).

This module only adds the judge-side validator: an answer that is not fully `ok` raises a
retryable ParseError (the client asks once more), and `partial_scores` recovers what a failed
answer still holds (see `grouprank.judges.groupwise`)."""
from __future__ import annotations

from grouprank.llm.types import ParseError
from grouprank.reranker.prompt import SYSTEM_PROMPT, TEMPLATE_VERSION, build_messages, parse_output  # noqa: F401

JUDGE_TEMPLATE_VERSION = f"judge.{TEMPLATE_VERSION}"


def validator(n_docs: int):
    def validate(text: str):
        pg = parse_output(text, n_docs)
        if not pg.ok:
            raise ParseError(f"groupwise answer {pg.status}: {pg.error}", retryable=True)
        return pg
    return validate


def partial_scores(text: str | None, n_docs: int) -> tuple[list, str | None, str]:
    """(scores with None for unusable entries, reason, status) from any answer text. Scores are
    kept only when the tags are well formed (status ok or bad_json): the valid entries of a
    bad_json answer are genuine per-document scores; a bad_tags answer yields none."""
    if not text:
        return [None] * n_docs, None, "empty"
    pg = parse_output(text, n_docs)
    if pg.status == "bad_tags":
        return [None] * n_docs, None, pg.status
    return list(pg.scores), pg.reason, pg.status
