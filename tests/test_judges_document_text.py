"""One document text for the judges and the reranker: the judges' pools, the judges' prompts, the
reranker's inference prompts (library and `grouprank rerank`) and its training groups all show
`grouprank.text.document_text(title, text)` for a document, with a title and without one."""
from __future__ import annotations

import pyarrow as pa
import pytest

from grouprank.config import JudgeSpec
from grouprank.judges.base import JudgePool
from grouprank.judges.groupwise import GroupwiseJudge
from grouprank.judges.listwise import ListwiseJudge
from grouprank.judges.pointwise import PointwiseJudge
from grouprank.prompts.common import clean_text, extract_query_and_docs
from grouprank.prompts.pointwise import SYSTEM_PROMPT as POINTWISE_SYSTEM
from grouprank.reranker.inference import FunctionBackend, rerank
from grouprank.text import document_text, document_text_map

DOCS = pa.table({
    "doc_id": ["t1", "n1", "c1", "t2"],
    "title": ["Wing flow", None, "Boundary layers", "Heat transfer"],
    "text": ["at mach 2\n\nin dry air", "no title here", "boundary layers in hypersonic flow", "by radiation"],
})
# written out, so that a change of the convention itself shows up here too
WANT = {"t1": "Wing flow at mach 2\n\nin dry air",           # title, one space, the text
        "n1": "no title here",                               # no title: the text alone
        "c1": "boundary layers in hypersonic flow",          # the text starts with its title: not doubled
        "t2": "Heat transfer by radiation"}
QUERIES = pa.table({"query_id": ["q1"], "text": ["hypersonic flow"], "split": ["test"]})
ORDER = ["c1", "t1", "n1", "t2"]
CANDIDATES = pa.table({"query_id": ["q1"] * 4, "doc_id": ORDER, "rank": [1, 2, 3, 4]})


def _texts(messages) -> list[str]:
    user = [m for m in messages if m["role"] == "user"][-1]["content"]
    return [t for _, t in extract_query_and_docs(user)[1]]


def shown(doc_id: str, max_chars: int = 3000) -> str:
    """What a prompt shows for a document: its document text, whitespace collapsed and cut."""
    return clean_text(WANT[doc_id], max_chars)


def test_the_fixture_is_document_text():
    titles = dict(zip(DOCS["doc_id"].to_pylist(), DOCS["title"].to_pylist()))
    texts = dict(zip(DOCS["doc_id"].to_pylist(), DOCS["text"].to_pylist()))
    assert {d: document_text(titles[d], texts[d]) for d in WANT} == WANT == document_text_map(DOCS)


@pytest.mark.parametrize("as_pandas", [False, True])
def test_judge_pool_holds_document_text(as_pandas):
    docs = DOCS.to_pandas() if as_pandas else DOCS
    pool = JudgePool.from_tables(CANDIDATES, docs, QUERIES)
    assert pool.docs == WANT
    assert pool.pools == {"q1": ORDER}
    # only the pooled documents are kept
    sub = JudgePool.from_tables(CANDIDATES.slice(0, 2), docs, QUERIES)
    assert sub.docs == {d: WANT[d] for d in ORDER[:2]}


class _NoClient:
    class endpoint:
        model = "m"


def test_judge_prompts_show_document_text():
    pool = JudgePool.from_tables(CANDIDATES, DOCS, QUERIES)
    specs = [(JudgeSpec(id="p", kind="pointwise"), 3000), (JudgeSpec(id="l", kind="listwise"), 20),
             (JudgeSpec(id="g", kind="groupwise", group_size=2, passes=2, seed=13), 3000)]
    seen = 0
    for cls, (spec, cut) in zip((PointwiseJudge, ListwiseJudge, GroupwiseJudge), specs):
        for req in cls(spec, _NoClient(), max_doc_chars=cut).plan(pool):
            docs = req.meta.doc_ids                       # the scoring mode's call
            if spec.kind == "listwise":
                s, e = req.meta.span
                assert docs == pool.pools["q1"][s:e]
            assert _texts(req.messages) == [shown(d, cut) for d in docs]
            seen += len(docs)
    assert seen == 4 + 4 + 2 * 4


@pytest.mark.parametrize("mode", ["groupwise", "pointwise", "listwise"])
def test_reranker_prompts_show_document_text(mode):
    prompts = []

    def model(messages):
        prompts.append(messages)
        return "no answer"

    cands = {"q1": [(d, 4.0 - i) for i, d in enumerate(ORDER)]}
    rerank(mode, cands, {"q1": "hypersonic flow"}, document_text_map(DOCS), FunctionBackend(model),
           group_size=2, window=4, stride=2)
    texts = [t for m in prompts for t in _texts(m)]
    assert sorted(texts) == sorted(shown(d) for d in WANT)     # every document once, as document text


def test_rerank_command_and_training_groups_use_document_text(tmp_path, monkeypatch):
    """`grouprank rerank` builds the texts from the collection's documents, the training groups
    from human qrels too: the same strings as the judges'."""
    import grouprank.collections
    import grouprank.reranker.inference as inference
    from grouprank.cli import main
    from grouprank.collections.base import Collection
    from grouprank.reranker.data import groups_from_qrels

    qrels = pa.table({"query_id": ["q1"] * 4, "doc_id": ORDER, "grade": [2, 1, 0, 0], "split": ["test"] * 4})
    coll = Collection("toy", DOCS, QUERIES, qrels)
    prompts = []

    class Recording(FunctionBackend):
        def __init__(self, *a, **kw):
            super().__init__(lambda m: prompts.append(m) or "no answer")

    monkeypatch.setattr(grouprank.collections, "load_collection", lambda *a, **kw: coll)
    monkeypatch.setattr(inference, "LLMBackend", Recording)
    run = tmp_path / "first.trec"
    run.write_text("".join(f"q1 Q0 {d} {i} {10 - i}.0 bm25\n" for i, d in enumerate(ORDER, 1)))
    rc = main(["rerank", "--run", str(run), "--collection", "toy", "--out", str(tmp_path / "out.trec"),
               "--mode", "pointwise", "--base-url", "http://127.0.0.1:9/v1", "--work-dir", str(tmp_path)])
    assert rc == 0
    assert all(m[0]["content"] == POINTWISE_SYSTEM for m in prompts)   # the judges' pointwise prompt
    assert sorted(t for m in prompts for t in _texts(m)) == sorted(shown(d) for d in WANT)

    rl, sft = groups_from_qrels(coll, group_sizes=(4,), groups_per_query=1, max_doc_chars=3000)
    assert len(rl) == 1
    assert _texts(rl[0]["prompt"]) == [shown(d) for d in rl[0]["doc_ids"]]
    assert sorted(rl[0]["doc_ids"]) == sorted(WANT)
