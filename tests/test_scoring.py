"""How candidates are cut into LLM calls (`grouprank.scoring`), one definition for the judges and
the reranker: near-equal disjoint groups, RankGPT's bottom-up sliding windows, the one seeded
generator, and the scoring modes both consumers drive."""
import math
import random

import pytest

from grouprank.config import JudgeSpec
from grouprank.judges.base import JudgePool
from grouprank.judges.groupwise import GroupwiseJudge
from grouprank.judges.listwise import ListwiseJudge
from grouprank.llm.types import LLMResult, ParseError
from grouprank.prompts.common import extract_query_and_docs
from grouprank.prompts.groupwise import render_target
from grouprank.reranker.inference import FunctionBackend, rerank_groupwise, rerank_listwise
from grouprank.scoring.groups import shuffled_groups, split_groups
from grouprank.scoring.groupwise import GroupwiseMode
from grouprank.scoring.listwise import ListwiseMode
from grouprank.scoring.rng import seeded_generator, seeded_rng
from grouprank.scoring.windows import sliding_windows


def test_split_groups_near_equal_and_disjoint():
    for n, c in [(100, 20), (95, 20), (21, 20), (5, 20), (41, 20), (50, 20), (40, 20)]:
        groups = split_groups(list(range(n)), c)
        assert len(groups) == math.ceil(n / c)
        assert [x for g in groups for x in g] == list(range(n))        # order kept, nothing lost
        sizes = [len(g) for g in groups]
        assert max(sizes) - min(sizes) <= 1 and max(sizes) <= c
    assert [len(g) for g in split_groups(list(range(50)), 20)] == [17, 17, 16]   # no group of 10 stragglers
    assert split_groups([], 20) == [] and split_groups(("a", "b"), 0) == [["a"], ["b"]]


def test_shuffled_groups_follow_the_rng():
    ids = [f"d{i}" for i in range(30)]
    g = shuffled_groups(ids, 10, random.Random(1))
    assert sorted(sum(g, [])) == sorted(ids) and [len(x) for x in g] == [10, 10, 10]
    assert g == shuffled_groups(ids, 10, random.Random(1)) != shuffled_groups(ids, 10, random.Random(2))
    assert ids == [f"d{i}" for i in range(30)]                          # input not shuffled in place
    # the mode seeds it per (seed, query, pass): every pass reshuffles, a rerun repeats
    mode = GroupwiseMode(group_size=10, passes=2, seed=13)
    g0 = mode.groups("q", ids, 0)
    assert g0 == mode.groups("q", ids, 0) != mode.groups("q", ids, 1) and g0 != mode.groups("q2", ids, 0)
    assert g0 != GroupwiseMode(group_size=10, passes=2, seed=14).groups("q", ids, 0)


def test_seeded_rng_keeps_each_purposes_stream():
    """Every purpose draws the stream it drew before the generators were unified, so a seed gives
    the same pools, judge groups and training sets as before (the values are those earlier code
    produced: a changed derivation changes every export)."""
    # training-set sampling: sha256("13␟groups␟q1"), first 8 bytes big-endian
    assert seeded_rng(13, "groups", "q1").random() == 0.2244211469477283
    # pooling: numpy's choice, seeded from sha256("13:q1") little-endian
    assert sorted(seeded_generator(13, "pool", "q1").choice(190, size=5, replace=False).tolist()) == [0, 18, 39, 69, 79]
    # the groupwise judge's groups: random.Random("13|q1|0")
    ids = [f"d{i}" for i in range(7)]
    assert GroupwiseMode(group_size=3, passes=1, seed=13).groups("q1", ids, 0) == [["d2", "d1", "d6"], ["d5", "d4"],
                                                                                   ["d0", "d3"]]
    assert seeded_rng(13, "groupwise", "q1", 0).random() != seeded_rng(13, "groups", "q1", 0).random()
    with pytest.raises(ValueError, match="seeded_rng"):
        seeded_generator(13, "groupwise", "q1", 0)


def test_sliding_windows_bottom_up():
    assert sliding_windows(8, 4, 2) == [(4, 8), (2, 6), (0, 4)]
    assert sliding_windows(50, 20, 10) == [(30, 50), (20, 40), (10, 30), (0, 20)]
    assert sliding_windows(5, 20, 10) == [(0, 5)]
    assert sliding_windows(25, 20, 10) == [(5, 25), (0, 15)]
    assert sliding_windows(100, 20, 10)[0] == (80, 100) and len(sliding_windows(100, 20, 10)) == 9
    assert len(sliding_windows(30, 10, 5)) == 5
    with pytest.raises(ValueError):
        sliding_windows(30, 10, 0)


# --------------------------------------------------------------------------- one mode, two consumers

N = 23
DOCS = {f"d{i:02d}": f"doc {i}" + (" GOOD" if i % 4 == 0 else "") for i in range(N)}
QUERIES = {"q1": "find good docs", "q2": "another query"}


def _groups_of(messages) -> tuple[str, ...]:
    return tuple(t for _, t in extract_query_and_docs(messages[-1]["content"])[1])


class _FnClient:
    """The judges' client interface (`map`, `endpoint`) answering with a Python function."""

    class endpoint:  # noqa: N801
        model = "fn"

    def __init__(self, fn):
        self.fn = fn

    def map(self, reqs, progress=None):
        out = []
        for r in reqs:
            text = self.fn(r.messages)
            try:
                parsed, status, err = r.validate(text), "ok", None
            except ParseError as e:
                parsed, status, err = None, "failed", str(e)
            out.append(LLMResult(text=text, parsed=parsed, status=status, error=err, request_hash="h", meta=r.meta))
        return out


def _grade(messages) -> str:
    docs = extract_query_and_docs(messages[-1]["content"])[1]
    return render_target("r", [10 if "GOOD" in t else 2 for _, t in docs])


def test_same_seed_same_groups_in_judge_and_reranker():
    pools = {q: sorted(DOCS) for q in QUERIES}
    seen = {"judge": [], "reranker": []}

    def recorder(who):
        def fn(messages):
            seen[who].append(_groups_of(messages))
            return _grade(messages)
        return fn

    spec = JudgeSpec(id="g", kind="groupwise", group_size=5, passes=2, seed=21)
    rows = GroupwiseJudge(spec, _FnClient(recorder("judge"))).run(JudgePool(QUERIES, DOCS, pools))
    cands = {q: [(d, float(N - i)) for i, d in enumerate(ds)] for q, ds in pools.items()}
    rerank_groupwise(cands, QUERIES, DOCS, FunctionBackend(recorder("reranker")), group_size=5, passes=2, seed=21)
    assert len(seen["judge"]) == 2 * 2 * math.ceil(N / 5) and sorted(seen["judge"]) == sorted(seen["reranker"])
    mode = GroupwiseMode(group_size=5, passes=2, seed=21)
    want = {tuple(DOCS[d] for d in g) for q in QUERIES for p in range(2) for g in mode.groups(q, pools[q], p)}
    assert set(seen["judge"]) == want
    assert all(r["status"] == "ok" for r in rows) and {r["score"] for r in rows} == {2.0, 10.0}
    # another seed, other groups
    seen["reranker"].clear()
    rerank_groupwise(cands, QUERIES, DOCS, FunctionBackend(recorder("reranker")), group_size=5, passes=2, seed=22)
    assert sorted(seen["judge"]) != sorted(seen["reranker"])


def test_one_failure_policy_groupwise_salvages_valid_entries():
    mode = GroupwiseMode(group_size=3, passes=1, seed=1)
    sc = mode.parse('<reason>r</reason><answer>{"[1]": 7, "[2]": 99, "[3]": 4}</answer>', 3)
    assert sc.scores == [7.0, None, 4.0] and sc.status == "bad_json" and not sc.ok
    assert mode.parse("no tags", 3).scores == [None] * 3 and mode.parse(None, 3).status == "call_failed"
    # the judge records the unscored document as failed, the reranker counts it 0: the others keep 7 and 4
    answer = '<reason>r</reason><answer>{"[1]": 10, "[2]": 99, "[3]": 10}</answer>'
    res = rerank_groupwise({"q1": [("d01", 3.0), ("d02", 2.0), ("d03", 1.0)]}, QUERIES, DOCS,
                           FunctionBackend(lambda m: answer), group_size=3, alpha=1.0)
    assert sorted(r["score"] for r in res.run) == [0.0, 1.0, 1.0] and res.summary["answers"] == {"bad_json": 1}


def test_listwise_loop_is_shared_and_salvages_placed_labels():
    mode = ListwiseMode(window=4, stride=2)
    sc = mode.parse("[3] > [9] > [1]", 4)
    assert sc.scores == [3.0, None, 4.0, None] and sc.status == "partial"
    ids = sorted(DOCS)[:10]
    run = mode.start({"q1": ids}, QUERIES, DOCS)
    for calls in run.steps():
        for call in calls:
            run.apply(call, "[2] > [1]")            # partial: swap the window's first two, keep the rest
    # a real implementation moves d01 up, step by step: d09 d08 … swapped pairwise bottom-up
    assert run.order["q1"] != ids and sorted(run.order["q1"]) == ids

    def good_first(messages):
        docs = extract_query_and_docs(messages[-1]["content"])[1]
        return " > ".join(f"[{lab}]" for lab, _ in sorted(docs, key=lambda x: ("GOOD" not in x[1], x[0])))

    pools = {"q1": sorted(DOCS)}
    spec = JudgeSpec(id="l", kind="listwise", window=6, stride=3, context_budget_tokens=1)
    rows = ListwiseJudge(spec, _FnClient(good_first)).run(JudgePool(QUERIES, DOCS, pools))
    judged = [r["doc_id"] for r in sorted(rows, key=lambda r: r["rank"])]
    lw = rerank_listwise({"q1": [(d, float(N - i)) for i, d in enumerate(pools["q1"])]}, QUERIES, DOCS,
                         FunctionBackend(good_first), window=6, stride=3)
    assert judged == [r["doc_id"] for r in lw.run]              # same windows, same answers, same order
    assert all("GOOD" in DOCS[d] for d in judged[:3])
