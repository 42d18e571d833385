"""Tolerant structured-output parsing (grouprank.llm.parsing) and server helpers: pure units."""
import pytest

from grouprank.llm import ParseError, extract_json, extract_tag, json_validator
from tests.support.fake_openai_server import mutate_labels, parse_fault_rates, prompt_hash


@pytest.mark.parametrize("text, expected", [
    ('{"[1]": 7, "[2]": 0}', {"[1]": 7, "[2]": 0}),
    ('  [3, 1, 2]\n', [3, 1, 2]),
    ('Sure! Here are the scores:\n```json\n{"score": 4}\n```\nHope this helps.', {"score": 4}),
    ('```\n{"score": 5}\n```', {"score": 5}),
    ('<reason>doc [2] is off-topic</reason>\n<answer>{"[1]": 9, "[2]": 1}</answer>', {"[1]": 9, "[2]": 1}),
    ('The answer is {"score": 8} and that is final. {"ignored": true', {"score": 8}),
    ('{"a": 1, "b": [1, 2,],}', {"a": 1, "b": [1, 2]}),  # trailing commas
    ("{'[1]': 3, '[2]': 10}", {"[1]": 3, "[2]": 10}),  # python literal
    ('{"note": "braces } inside { strings", "score": 2} trailing', {"note": "braces } inside { strings", "score": 2}),
    ("It's relevant: {\"score\": 6}", {"score": 6}),  # apostrophe in prose before the JSON
    ('prefix [1] > [3] > [2] then {"ranking": ["[1]", "[3]", "[2]"]}', {"ranking": ["[1]", "[3]", "[2]"]}),
])
def test_extract_json_tolerant(text, expected):
    assert extract_json(text) == expected


@pytest.mark.parametrize("text", ["", "   ", None, "no json here at all", '{"[1]": 7, "[2]": ',
                                  "<answer>{\"score\": </answer>"])
def test_extract_json_raises_retryable(text):
    with pytest.raises(ParseError) as e:
        extract_json(text)
    assert e.value.retryable


def test_extract_json_expect_type():
    assert extract_json('[1, 2] then {"score": 3}', expect=dict) == {"score": 3}
    with pytest.raises(ParseError):
        extract_json("[1, 2]", expect=dict)


def test_extract_tag():
    t = "<reason>I will put the <answer> at the end</reason><answer> {\"x\": 1} </answer>"
    assert extract_tag(t, "answer") == '{"x": 1}'
    assert extract_tag("<ANSWER>a</ANSWER> <answer>b</answer>", "answer", last=False) == "a"
    assert extract_tag("<answer>b</answer><answer>c</answer>", "answer") == "c"
    assert extract_tag('<answer format="json">7</answer>', "answer") == "7"
    assert extract_tag("<answer>{\"x\": 1", "answer") is None  # truncated: no closing tag
    assert extract_tag("", "answer") is None and extract_tag(None, "answer") is None


def test_json_validator_with_tag_and_check():
    def check(obj):
        missing = [k for k in ("[1]", "[2]") if k not in obj]
        if missing:
            raise ParseError(f"missing {missing}")
        return {k: int(v) for k, v in obj.items()}

    v = json_validator(check, tag="answer")
    assert v('<reason>r</reason><answer>{"[1]": 3, "[2]": 4}</answer>') == {"[1]": 3, "[2]": 4}
    with pytest.raises(ParseError, match="missing"):
        v('<answer>{"[1]": 3, "[3]": 4}</answer>')
    with pytest.raises(ParseError, match="no complete <answer>"):
        v('<reason>r</reason><answer>{"[1]": 3, "[2]"')


def test_mutate_labels():
    assert mutate_labels('<answer>{"[1]": 3, "[2]": 5}</answer>') == '<answer>{"[1]": 3, "[3]": 5}</answer>'
    assert mutate_labels('{"score": 5}') == '{"score": 5}'


def test_parse_fault_rates():
    r = parse_fault_rates(0.6)
    assert set(r) == {"429", "500", "hang", "malformed", "truncated", "wrong_labels"}
    assert abs(sum(r.values()) - 0.6) < 1e-9
    assert parse_fault_rates(0.0, None, ["429=0.5"]) == {"429": 0.5}
    with pytest.raises(ValueError):
        parse_fault_rates(0.0, None, {"bogus": 0.1})
    with pytest.raises(ValueError):
        parse_fault_rates(0.0, None, {"429": 0.7, "500": 0.7})


def test_prompt_hash_canonical():
    a = [{"role": "user", "content": "x"}]
    b = [{"content": "x", "role": "user"}]
    assert prompt_hash(a) == prompt_hash(b) != prompt_hash([{"role": "user", "content": "y"}])
