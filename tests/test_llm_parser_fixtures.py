"""The parsers on fixtures: the defects of issue 14 (tests/fixtures/parser_defects.json: each
case was read wrongly by the parsers before it) and real SmolLM2-135M-Instruct answers
(tests/fixtures/smollm2_answers.json, collected by tests.support.harvest_llm_answers from the
llama.cpp server, malformed ones included). No server needed."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from grouprank.llm.types import ParseError
from grouprank.prompts import groupwise as GW
from grouprank.prompts import listwise as LW
from grouprank.prompts import pointwise as PW
from grouprank.queries import templates as QT
from grouprank.queries.generation import parse_query

FIX = Path(__file__).parent / "fixtures"
DEFECTS = json.loads((FIX / "parser_defects.json").read_text())["cases"]
REAL = json.loads((FIX / "smollm2_answers.json").read_text())


def _read(case: dict):
    """The parser's reading of a case: a value, or "refused" (ParseError)."""
    p, text = case["parser"], case["text"]
    try:
        if p == "listwise":
            return LW.validator(case["n"])(text)
        if p == "pointwise":
            return PW.parse(text)[0]
        if p == "query":
            return parse_query(text, QT.get(case["query_type"]), None)["query"]
        if p == "groupwise":
            return GW.validator(case["n"])(text).scores
    except ParseError:
        return "refused"
    raise AssertionError(f"unknown parser {p}")


@pytest.mark.parametrize("case", DEFECTS, ids=[c["id"] for c in DEFECTS])
def test_defect_fixture(case):
    assert _read(case) == case["want"], f"{case['id']}: before the fix: {case['old']}"


def test_validators_that_accept_cut_answers_are_only_those_whose_format_proves_completeness():
    """The LLM client refuses an answer cut at max_tokens unless the validator declares
    `accepts_truncated`: the groupwise answer (needs its closing </answer>) and the listwise
    ranking (needs every identifier) may; pointwise JSON and query generation may not."""
    assert getattr(GW.validator(3), "accepts_truncated", False)
    assert getattr(LW.validator(3), "accepts_truncated", False)
    assert not getattr(PW.parse, "accepts_truncated", False)
    from grouprank.queries.generation import make_validator
    assert not getattr(make_validator(QT.get("question"), "doc"), "accepts_truncated", False)


# --------------------------------------------------------------------------- real answers

def _answers(kind):
    return [(i, a) for i, a in enumerate(REAL["answers"]) if a["kind"] == kind]


R = "refused"
# The reading a careful person makes of each real answer (index into REAL["answers"]), written by
# hand from the answer text (and, for queries, the document), not by running the parser; the
# fixture's own "want" field was filled in by the parser when the answers were harvested.
BY_HAND = {
    0: R,    # pointwise: "0.1" then a prose "score": 5.2 -- no integer 0-10 score anywhere
    1: 1,    # pointwise: '"score": 1' (the leading "0.5" is noise before the prose)
    2: R,    # pointwise: "score": 1.5 -- not an integer
    3: R,    # pointwise: prose about the document, no score
    4: R,    # pointwise: "the score of 0 to 10" names the scale, not a score
    5: R,    # pointwise: cut at max_tokens; "score": 0.5 is not an integer anyway
    6: 0,    # pointwise: "not helpful" (the scale's 0) and "the score of 0"
    7: R,    # pointwise: "not helpful", but no number given
    8: R,    # listwise, 4 documents: names [2], [3], [4] as best in three senses, no ranking of all four
    9: R,    # listwise: names [1] only
    10: R,   # groupwise: no <answer>, only an invented document [5]
    11: R,   # groupwise: no <answer>, an invented document [5]
    12: R,   # keyword query: three sentences of prose (200+ characters)
    13: R,   # question: "The document provides a detailed answer to the question." -- no question
    14: R,   # keyword query: the document's first sentence copied whole
    15: "What is the cost of a site with 500 sq. ft. and an integral colored concrete floor?",
    16: R,   # keyword query: "on average, getting concrete floors can cost anywhere from ..." copied
    17: "What is the most expensive way to get concrete floors?",
    18: R,   # keyword query: commentary, then a JSON query cut mid-string
    19: "What Affects the Square-Foot Cost of Concrete Floors?",
    20: R,   # keyword query: the document's opening sentences copied
    21: R,   # question: a copied sentence, then JSON with no query string
    22: R,   # keyword query: the document retold in three sentences
    23: "What is the population of Pampa, Texas?",
    24: R,   # reranker groupwise: cut JSON about "Pampa", no <answer>
    25: R,   # reranker groupwise: a list of percentages, no <answer>
}


def test_the_hand_readings_cover_the_fixture():
    assert sorted(BY_HAND) == list(range(len(REAL["answers"])))
    assert [REAL["answers"][i]["kind"] for i in (0, 8, 10, 12, 24)] == [
        "pointwise", "listwise", "groupwise", "query", "rerank_groupwise"]
    assert REAL["answers"][16]["text"].startswith('{"query": "on average, getting concrete floors')


def test_real_fixture_covers_every_path_and_malformed_answers():
    kinds = {a["kind"] for a in REAL["answers"]}
    assert kinds >= {"pointwise", "listwise", "groupwise", "query", "rerank_groupwise"}
    refused = [i for i in BY_HAND if BY_HAND[i] == R]
    assert refused, "the fixture should hold malformed real answers"
    assert any(a.get("logprobs") for _, a in _answers("pointwise"))


@pytest.mark.parametrize("i", range(len(REAL["answers"])))
def test_real_answer(i):
    """Every real answer reads as a person reads it (BY_HAND): a valid value or a refusal, never an
    exception other than ParseError."""
    a = REAL["answers"][i]
    kind = a["kind"]
    case = {"parser": {"rerank_groupwise": "groupwise"}.get(kind, kind), "text": a["text"] or "",
            "n": a["n_docs"], "query_type": a.get("query_type")}
    if kind == "query":  # the copy check needs the document
        try:
            got = parse_query(a["text"] or "", QT.get(a["query_type"]), a.get("doc_text"))["query"]
        except ParseError:
            got = "refused"
    else:
        got = _read(case)
    assert got == BY_HAND[i], (kind, a["text"])
    if kind == "listwise" and got != "refused":
        assert sorted(got) == list(range(1, a["n_docs"] + 1))
    if kind == "pointwise" and got != "refused":
        assert 0 <= got <= 10


def test_real_logprob_grades():
    """Log-probability grades of the real pointwise answers that came with top_logprobs: the
    expected value lies in 0..10, within the grade tokens' range, near the generated score when
    the model was sure of it, and None when the answer holds no score."""
    n = 0
    for i, a in _answers("pointwise"):
        if not a.get("logprobs"):
            continue
        ev = PW.expected_grade(a["logprobs"], a["text"])
        if BY_HAND[i] == R:
            assert ev is None or a.get("grade_from_logprobs") is not None
            continue
        if a.get("grade_from_logprobs") is None:
            assert ev is None
            continue
        n += 1
        value, mass = ev
        assert 0 <= value <= 10 and 0 < mass <= 1 + 1e-6
        assert math.isclose(value, a["grade_from_logprobs"], abs_tol=1e-6)
        if mass > 0.95:
            assert abs(value - BY_HAND[i]) < 1.0
    assert n > 0


def test_expected_grade_by_hand():
    """The expected value over grade tokens, on a hand-made token list: JSON answer, the score's
    own token with alternatives; a '1' continued by '0' counts as 10 with the '0' probability."""
    lp = [['{"', -0.01, []], ["score", -0.01, []], ['":', -0.01, []], [" ", -0.01, []],
          ["7", math.log(0.6), [["7", math.log(0.6)], ["8", math.log(0.3)], ["x", math.log(0.05)]]],
          [",", -0.01, []]]
    v, mass = PW.expected_grade(lp, '{"score": 7,')
    assert math.isclose(mass, 0.9) and math.isclose(v, (0.6 * 7 + 0.3 * 8) / 0.9)
    ten = [["1", math.log(0.8), [["1", math.log(0.8)], ["9", math.log(0.2)]]],
           ["0", math.log(0.75), [["0", math.log(0.75)], ["\n", math.log(0.25)]]]]
    v, mass = PW.expected_grade(ten, "10")
    assert math.isclose(v, 0.8 * (10 * 0.75 + 1 * 0.25) + 0.2 * 9)
    # no score in the answer, or tokens that do not spell it: no grade
    assert PW.expected_grade([["Mal", -0.1, []], ["aria", -0.1, []]], "Malaria") is None
    assert PW.expected_grade(lp, "something else") is None
    assert PW.expected_grade(None, '{"score": 7}') is None
