"""Judge templates, parsers and the local responder (in process, with a stub scorer: no models)."""
from __future__ import annotations

import json

import pytest

from tests.support import judge_responder as R
from grouprank.judges.groupwise import shuffled_groups, split_groups
from grouprank.judges.listwise import plan_windows
from grouprank.judges.templates import groupwise as GW
from grouprank.judges.templates import listwise as LW
from grouprank.judges.templates import pointwise as PW
from grouprank.llm.types import ParseError


class StubScorer:
    model_id = "stub"

    def score_texts(self, query, texts):
        return [float(len(t) % 11) for t in texts]


@pytest.fixture
def stub():
    R.set_scorer(StubScorer())
    yield
    R.set_scorer(None)


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


def test_groupwise_validator_and_partial_scores():
    ok = '<reason>r</reason>\n<answer>{"[1]": 7, "[2]": 0}</answer>'
    assert GW.validator(2)(ok).scores == [7.0, 0.0]
    bad = '<reason>r</reason>\n<answer>{"[1]": 7, "[3]": 0}</answer>'
    with pytest.raises(ParseError):
        GW.validator(2)(bad)
    assert GW.partial_scores(bad, 2)[0] == [7.0, None]
    assert GW.partial_scores('<reason>r</reason><answer>{"[1]": 7', 2)[0] == [None, None]  # truncated
    assert GW.JUDGE_TEMPLATE_VERSION == "judge.groupwise@1"


def test_windows_and_groups():
    assert plan_windows(8, 4, 2) == [(4, 8), (2, 6), (0, 4)]
    assert plan_windows(50, 20, 10) == [(30, 50), (20, 40), (10, 30), (0, 20)]
    assert plan_windows(5, 20, 10) == [(0, 5)]
    assert plan_windows(25, 20, 10) == [(5, 25), (0, 15)]
    assert [len(g) for g in split_groups(list(range(50)), 20)] == [17, 17, 16]
    assert [len(g) for g in split_groups(list(range(40)), 20)] == [20, 20]
    ids = [f"d{i}" for i in range(30)]
    g0 = shuffled_groups(ids, 10, 13, "q", 0)
    assert sorted(sum(g0, [])) == sorted(ids)
    assert g0 == shuffled_groups(ids, 10, 13, "q", 0)        # seeded
    assert g0 != shuffled_groups(ids, 10, 13, "q", 1)        # each pass reshuffles


def test_responder_answers_each_template(stub):
    docs = ["a" * 3, "b" * 7, "c" * 5]
    pw = json.loads(R.respond(PW.build_messages("q", docs[1]), {}))
    assert pw["score"] == 7 and "not an LLM" in pw["reason"]
    assert R.respond(LW.build_messages("q", docs), {}) == "[2] > [3] > [1]"
    g = GW.validator(3)(R.respond(GW.build_messages("q", docs), {}))
    assert g.scores == [3.0, 7.0, 5.0]
    # the answers validate with the judges' own parsers
    assert PW.validate(json.dumps(pw))[0] == 7
    assert LW.validator(3)(R.respond(LW.build_messages("q", docs), {})) == [2, 3, 1]


def test_responder_wrong_labels_fault(stub):
    docs = ["a" * 3, "b" * 7, "c" * 5]
    with pytest.raises(ParseError):
        PW.validate(R.respond(PW.build_messages("q", docs[0]), {}, fault="wrong_labels"))
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
