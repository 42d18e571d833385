"""Generated-query validation on real answers (issue 27, item 8): trailing commentary is cut, a
keyword query copying 6+ consecutive words of its document is refused.

The answers are SmolLM2-135M-Instruct's own (tests/fixtures/smollm2_answers.json, harvested from
the llama.cpp server: `kind: query`), and the expected readings below were written by hand from
reading each answer and its document, not produced by the parser. The hand-made cases after them
imitate the commentary small models add."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from grouprank.llm.types import ParseError
from grouprank.queries import templates as T
from grouprank.queries.generation import parse_query

_FIX = json.loads((Path(__file__).parent / "fixtures" / "smollm2_answers.json").read_text(encoding="utf-8"))
QUERY_ANSWERS = [a for a in _FIX["answers"] if a["kind"] == "query"]

# index into QUERY_ANSWERS -> the query a careful reader takes from the answer, or None (no
# acceptable query: why, in a word the ParseError says)
EXPECTED = {
    0: (None, "too long"),        # keyword: three sentences of prose, 200+ characters
    1: (None, "describes the document"),   # "The document provides a detailed answer to the question."
    2: (None, "too long"),        # keyword: the document's first sentence copied whole (131 chars)
    3: ("What is the cost of a site with 500 sq. ft. and an integral colored concrete floor?", None),
    4: (None, "copies 6"),        # keyword: "on average, getting concrete floors can cost anywhere from" copied
    5: ("What is the most expensive way to get concrete floors?", None),
    6: (None, "malformed or truncated"),  # commentary, then a JSON query cut mid-string
    7: ("What Affects the Square-Foot Cost of Concrete Floors?", None),  # the document's title, 8 words
    8: (None, "too long"),        # keyword: the document's first sentences copied
    9: (None, "malformed or truncated"),  # a copied sentence, then JSON without a query string
    10: (None, "too long"),       # keyword: the document retold in three sentences
    11: ("What is the population of Pampa, Texas?", None),
}


def test_the_fixture_holds_the_answers_the_readings_were_written_for():
    assert len(QUERY_ANSWERS) == len(EXPECTED) == 12
    assert [a["query_type"] for a in QUERY_ANSWERS] == ["keyword", "question"] * 6
    assert QUERY_ANSWERS[4]["text"].startswith('{"query": "on average, getting concrete floors')


@pytest.mark.parametrize("i", sorted(EXPECTED))
def test_real_smollm2_query_answers(i):
    a = QUERY_ANSWERS[i]
    query, why = EXPECTED[i]
    tpl = T.get(a["query_type"])
    if query is None:
        with pytest.raises(ParseError, match=why):
            parse_query(a["text"], tpl, a["doc_text"])
    else:
        assert parse_query(a["text"], tpl, a["doc_text"])["query"] == query


DOC_CONCRETE = QUERY_ANSWERS[0]["doc_text"]    # "For a 4 inch concrete floor, 1 yard of concrete will cover ..."
DOC_COLOR = QUERY_ANSWERS[2]["doc_text"]       # "... Integral colored concrete floor cost: $3.75 ..."
DOC_PAMPA = QUERY_ANSWERS[10]["doc_text"]
DOC_ROY = QUERY_ANSWERS[8]["doc_text"]


@pytest.mark.parametrize("answer, qtype, doc, expected", [
    # commentary on a line of its own, after a sentence, in a parenthesis, after a dash, a pleasantry
    ("concrete floor cost per square foot\n\nThis query targets the price range given in the document.",
     "keyword", DOC_CONCRETE, "concrete floor cost per square foot"),
    ('"population of Pampa Texas" - this query asks for the number of residents.', "keyword", DOC_PAMPA,
     "population of Pampa Texas"),
    ("What is the population of Pampa, Texas? (This question can be answered from the census figure.)",
     "question", DOC_PAMPA, "What is the population of Pampa, Texas?"),
    ("Roy Roberts character actor films\nI hope this helps!", "keyword", DOC_ROY, "Roy Roberts character actor films"),
    ("How long was Roy Roberts's career as an actor? The answer is in the second sentence.", "question", DOC_ROY,
     "How long was Roy Roberts's career as an actor?"),
    ('{"query": "Roy Roberts actor career"}\nNote: the query focuses on his film roles.', "keyword", DOC_ROY,
     "Roy Roberts actor career"),
    ("Query: decorative concrete floor installation cost\nExplanation: the document lists the factors.",
     "keyword", DOC_CONCRETE, "decorative concrete floor installation cost"),
    # not commentary: two questions stay one query
    ("Does colored concrete cost more? How much per square foot?", "question", DOC_COLOR,
     "Does colored concrete cost more? How much per square foot?"),
    # keyword copy limit: a 5-word phrase of the document is a fine keyword query
    ('{"query": "integral colored concrete floor cost"}', "keyword", DOC_COLOR, "integral colored concrete floor cost"),
    ('{"query": "Pampa Texas population census"}', "keyword", DOC_PAMPA, "Pampa Texas population census"),
])
def test_commentary_is_cut_and_short_phrases_pass(answer, qtype, doc, expected):
    assert parse_query(answer, T.get(qtype), doc)["query"] == expected


@pytest.mark.parametrize("answer, doc", [
    ('{"query": "yard of concrete will cover 80 square feet"}', DOC_CONCRETE),           # 8 copied words
    ('{"query": "sub-base preparation, site access, small floors under 500"}', DOC_COLOR),  # 9 copied words
    ("Pampa is the county seat of Gray County", DOC_PAMPA),                              # 8 copied words
    ("This query is about the document.", DOC_PAMPA),                                    # only commentary
])
def test_copied_keyword_strings_and_bare_commentary_are_refused(answer, doc):
    with pytest.raises(ParseError) as e:
        parse_query(answer, T.get("keyword"), doc)
    assert e.value.retryable
