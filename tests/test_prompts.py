"""The scoring prompts (`grouprank.prompts`): one scale text, the parsers, and the test server's
judge responder answering each prompt (in process, with a stub scorer: no models)."""
from __future__ import annotations

import json

import pytest

from grouprank.llm.types import ParseError
from grouprank.prompts import groupwise as GW
from grouprank.prompts import listwise as LW
from grouprank.prompts import pointwise as PW
from grouprank.prompts.scale import CRITERIA, SCALE
from tests.support import judge_responder as R


class StubScorer:
    model_id = "stub"

    def score_texts(self, query, texts):
        return [float(len(t) % 11) for t in texts]


@pytest.fixture
def stub():
    R.set_scorer(StubScorer())
    yield
    R.set_scorer(None)


def test_scale_is_written_once_and_quoted_by_the_scoring_prompts():
    for system in (PW.SYSTEM_PROMPT, GW.SYSTEM_PROMPT):
        assert system.count(CRITERIA + SCALE) == 1
    assert SCALE.startswith("Scale:\n9-10: extremely helpful")
    assert SCALE.endswith("0: not helpful; unrelated to the query.\n")
    assert "Scale:" not in LW.SYSTEM_PROMPT          # the listwise prompt ranks, it does not score
    assert {PW.TEMPLATE_VERSION, LW.TEMPLATE_VERSION, GW.TEMPLATE_VERSION, GW.JUDGE_TEMPLATE_VERSION} == {
        "judge.pointwise@1", "judge.listwise@1", "groupwise@1", "judge.groupwise@1"}


def test_pointwise_parser_is_tolerant_but_strict_on_values():
    assert PW.parse('{"score": 7, "reason": "ok"}') == (7, "ok")
    assert PW.parse('Sure!\n```json\n{"score": "8", "reason": "x"}\n```') == (8, "x")
    assert PW.parse("<answer>{'score': 3.0}</answer>") == (3, None)
    assert PW.parse(" 9 ") == (9, None)
    for bad in ['{"score": 11}', '{"score": 7.5}', '{"[2]": 7}', "no idea", '{"score": true}', ""]:
        with pytest.raises(ParseError):
            PW.parse(bad)


def test_listwise_parser():
    assert LW.parse_partial("[2] > [1] > [3]", 3) == ([2, 1, 3], [])
    assert LW.parse_partial("<think>[3] is best</think>\n[1] > [3] > [2]", 3)[0] == [1, 3, 2]
    assert LW.parse_partial("[2, 3, 1]", 3) == ([2, 3, 1], [])
    assert LW.parse_partial('["[3]", "[1]", "[2]"]', 3) == ([3, 1, 2], [])
    order, problems = LW.parse_partial("[2] > [2] > [4] > [1]", 3)
    assert order == [2, 1] and any("unknown" in p for p in problems) and any("missing" in p for p in problems)
    with pytest.raises(ParseError):
        LW.validator(3)("[2] > [1]")
    assert LW.validator(3)("[2] > [1] > [3]") == [2, 1, 3]
    # the reranker's reading: a full 0-based permutation, unmentioned positions appended in order
    assert LW.parse_permutation("<think>[1]</think> [3] > [1]", 4) == [2, 0, 1, 3]
    assert LW.parse_permutation("[2] > [2] > [9]", 3) == [1, 0, 2]
    assert LW.parse_permutation("no idea", 3) is None and LW.parse_permutation(None, 3) is None


def test_groupwise_validator_and_partial_scores():
    ok = '<reason>r</reason>\n<answer>{"[1]": 7, "[2]": 0}</answer>'
    assert GW.validator(2)(ok).scores == [7.0, 0.0]
    bad = '<reason>r</reason>\n<answer>{"[1]": 7, "[3]": 0}</answer>'
    with pytest.raises(ParseError):
        GW.validator(2)(bad)
    assert GW.partial_scores(bad, 2)[0] == [7.0, None]
    assert GW.partial_scores('<reason>r</reason><answer>{"[1]": 7', 2)[0] == [None, None]  # truncated
    assert GW.JUDGE_TEMPLATE_VERSION == "judge.groupwise@1"


def test_responder_answers_each_template(stub):
    docs = ["a" * 3, "b" * 7, "c" * 5]
    pw = json.loads(R.respond(PW.build_messages("q", docs[1]), {}))
    assert pw["score"] == 7 and "not an LLM" in pw["reason"]
    assert R.respond(LW.build_messages("q", docs), {}) == "[2] > [3] > [1]"
    g = GW.validator(3)(R.respond(GW.build_messages("q", docs), {}))
    assert g.scores == [3.0, 7.0, 5.0]
    # the answers validate with the judges' own parsers
    assert PW.parse(json.dumps(pw))[0] == 7
    assert LW.validator(3)(R.respond(LW.build_messages("q", docs), {})) == [2, 3, 1]


def test_responder_wrong_labels_fault(stub):
    docs = ["a" * 3, "b" * 7, "c" * 5]
    with pytest.raises(ParseError):
        PW.parse(R.respond(PW.build_messages("q", docs[0]), {}, fault="wrong_labels"))
    wrong = R.respond(LW.build_messages("q", docs), {}, fault="wrong_labels")
    order, problems = LW.parse_partial(wrong, 3)
    assert order == [2, 3] and problems
    gw = R.respond(GW.build_messages("q", docs), {}, fault="wrong_labels")
    with pytest.raises(ParseError):
        GW.validator(3)(gw)
    assert GW.partial_scores(gw, 3)[0] == [3.0, 7.0, None]


def test_responder_registry_hook(stub):
    msgs = [{"role": "system", "content": "Write search queries for this document."},
            {"role": "user", "content": "doc text"}]
    with pytest.raises(ValueError):
        R.respond(msgs, {})
    R.register("querygen", lambda m: m[0]["content"].startswith("Write search queries"),
               lambda m, body, fault: '{"queries": ["q1"]}')
    try:
        assert json.loads(R.respond(msgs, {}))["queries"] == ["q1"]
        # judge prompts still go to the built-in responders
        assert json.loads(R.respond(PW.build_messages("q", "abc"), {}))["score"] == 3
    finally:
        R.unregister("querygen")


def test_detect_kind_by_shape_when_system_prompt_differs():
    msgs = PW.build_messages("q", "doc")
    msgs[0]["content"] = "Judge relevance. Answer {\"score\": n}."
    assert R.detect_kind(msgs) == "pointwise"
    msgs = GW.build_messages("q", ["a", "b"])
    msgs[0]["content"] = "other"
    assert R.detect_kind(msgs) == "groupwise"
