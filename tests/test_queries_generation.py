"""LLM query generation end to end through the real HTTP path: LLMClient -> the local
OpenAI-compatible server (fault injection on) -> tests.support.query_responder; then the
round-trip filter with the real hybrid retriever over a SciFact subset."""
import pyarrow as pa
import pytest

from data_schemas import QUERIES
from grouprank.config import RunConfig
from grouprank.errors import UserError
from tests.support.fake_openai_server import start_local_server
from grouprank.queries.embed import default_embedder
from grouprank.queries.leakage import EvalQuery
from grouprank.queries.mine import apply_filters, mine_queries

N_CORPUS, N_DOCS = 150, 24
MODEL = "extractive-standin?garbage=0.08&copy=0.15"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("srv") / "server.log"
    with start_local_server("tests.support.query_responder:respond", seed=11, log_path=log,
                            faults={"malformed": 0.1, "truncated": 0.1, "500": 0.05, "429": 0.05}) as srv:
        yield srv


@pytest.fixture(scope="module")
def corpus(load):
    """A SciFact subset: the evidence documents of the 20 train claims that max_queries=20 samples
    (so few-shot examples exist) plus the first documents of the corpus, N_CORPUS in all."""
    import pyarrow.compute as pc
    from grouprank.queries.sources import cap, from_collection
    c = load("scifact")
    train = [r["query_id"] for r in cap(from_collection(c, ["train"]), 20, seed=13)]
    ev = c.qrels.filter(pc.is_in(c.qrels["query_id"], pa.array(train)))["doc_id"].to_pylist()
    ids = list(dict.fromkeys(ev + c.documents["doc_id"].to_pylist()))[:N_CORPUS]
    return c.documents.filter(pc.is_in(c.documents["doc_id"], pa.array(ids)))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("gen")  # shared: the hybrid index over the corpus is built once


def _cfg(work, base_url, **q):
    return RunConfig.model_validate({
        "work_dir": str(work),
        "queries": {"generate": True, "generate_docs": N_DOCS, "splits": [], "leakage_eval_splits": [],
                    "sampling": "length_stratified", **q},
        "llm": {"endpoints": [{"name": "local", "base_url": base_url, "model": MODEL, "max_concurrency": 8,
                               "backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 30}]},
        "retrieval": {"max_seq_length": 128}})


def test_generation_end_to_end_with_faults_and_roundtrip(load, server, corpus, work):
    c = load("scifact")
    docs = corpus
    cfg = _cfg(work, server.base_url)
    server.reset()
    table, report = mine_queries(cfg, docs, c.queries, c.qrels, collection="scifact", embed=default_embedder())
    rows = table.to_pylist()
    stats = server.stats(detail=False)
    # faults really happened on the wire and were retried or recorded
    assert sum(stats["faults"].get(k, 0) for k in ("malformed", "500", "429")) > 0
    assert stats["faults"].get("truncated", 0) > 0
    assert report["generation"]["llm_retries"] > 0 and report["generation"]["llm_parse_retries"] > 0
    # one row per (document, type), nothing dropped silently
    assert len(rows) == N_DOCS * 3 == report["generation"]["requests"]
    assert len({r["source_doc_id"] for r in rows}) == N_DOCS
    dec = report["decisions"]
    assert dec.get("parse_error", 0) > 0  # refusals and document-copying posts from the responder
    for r in rows:
        assert r["source"] == "generated" and r["split"] == "generated"
        assert r["generator_model"] == MODEL and r["template_version"] == f"queries.{r['query_type']}@1"
        assert r["query_id"] == f"gen-{r['query_type']}-{r['source_doc_id']}"
        if r["decision"] == "parse_error":
            assert r["text"] and r["decision_detail"].startswith("parse:") and r["roundtrip_rank"] is None
        else:  # round-trip rank recorded for every generated query with text
            assert r["decision"] in ("kept", "roundtrip", "duplicate", "near_duplicate")
            assert r["roundtrip_rank"] is None or 1 <= r["roundtrip_rank"] <= cfg.queries.roundtrip_depth
            if r["decision"] == "kept":
                assert r["roundtrip_rank"] is not None and r["roundtrip_rank"] <= cfg.queries.roundtrip_k
    copied = [r for r in rows if r["decision"] == "parse_error" and "copies 8" in r["decision_detail"]]
    assert copied and all(r["query_type"] == "reasoning" for r in copied)
    rt = report["filters"]["roundtrip"]
    parsed = [r for r in rows if r["decision"] != "parse_error"]
    assert rt["n"] == len(parsed) and 0.0 <= rt["keep_rate"] <= 1.0
    assert set(rt["by_type"]) == {"keyword", "question", "reasoning"}
    print(f"\nround-trip keep rate (k={rt['k']}, corpus {N_CORPUS} docs, extractive stand-in): "
          f"{rt['keep_rate']:.3f}; by type " + ", ".join(f"{t}={v['keep_rate']:.3f}" for t, v in rt["by_type"].items())
          + f"; decisions {dec}; server {stats['requests']} requests, faults {stats['faults']}")
    QUERIES.validate_table(table)

    # a rerun answers every validated prompt from the cache: only the failed ones are asked again
    server.reset()
    table2, report2 = mine_queries(cfg, docs, c.queries, c.qrels, collection="scifact", embed=default_embedder())
    n_failed = dec.get("parse_error", 0) + dec.get("generation_failed", 0)
    assert report2["generation"]["llm_cached"] == len(rows) - n_failed
    assert server.stats(detail=False)["prompts"] == n_failed
    kept1 = {r["query_id"]: r["text"] for r in rows if r["decision"] == "kept"}
    assert {r["query_id"]: r["text"] for r in table2.to_pylist() if r["decision"] == "kept"} == kept1


def test_stage_generates_with_existing_queries_and_few_shot(load, server, corpus, work):
    from grouprank.queries.mine import mine_queries
    from grouprank.queries.stage import stats_of
    c = load("scifact")
    docs = corpus
    cfg = _cfg(work, server.base_url, splits=["train"], max_queries=20, few_shot=2, generate_docs=6,
               query_types=["keyword", "question"], sampling="random")
    t, report = mine_queries(cfg, docs, c.queries, c.qrels, collection="scifact", embed=default_embedder())
    src = t["source"].to_pylist()
    assert src.count("existing") == 20 and src.count("generated") == 12
    s = stats_of(report)
    assert s["generation.few_shot"] == 2 and "roundtrip.keep_rate" in s


def test_generate_without_endpoint_is_a_clear_error(load, tmp_path):
    c = load("scifact")
    cfg = RunConfig.model_validate({"work_dir": str(tmp_path), "queries": {"generate": True, "splits": [],
                                                                           "leakage_eval_splits": []}})
    with pytest.raises(UserError, match="llm.endpoints is empty"):
        mine_queries(cfg, c.documents.slice(0, 10), c.queries, None)


def test_decision_precedence_with_fake_retriever(tmp_path):
    def rec(qid, text, doc):
        return {"query_id": qid, "text": text, "collection": "c", "split": "generated", "source": "generated",
                "source_doc_id": doc, "generator_model": "m", "template_version": "queries.keyword@1",
                "query_type": "keyword", "roundtrip_rank": None, "decision": "kept", "decision_detail": None}
    recs = [rec("a", "scurvy vitamin c", "d1"), rec("b", "Scurvy, vitamin C!", "d2"),      # b: exact dup of a
            rec("c", "scurvy vitamin c", "d9"),                                             # c: fails round trip
            rec("d", "rickets vitamin d sunlight", "d3"),                                   # d: leaks (and would pass)
            rec("e", "iron deficiency anaemia", "d4")]
    ranks = {"d1": 1, "d2": 3, "d9": 57, "d3": 2, "d4": None}
    cfg = RunConfig.model_validate({"work_dir": str(tmp_path), "queries": {"roundtrip_k": 5}})
    report = apply_filters(recs, [EvalQuery("t1", "Rickets, vitamin D and sunlight", "test")], embed=None,
                           rank_fn=lambda texts, docs, k: [ranks[d] for d in docs], cfg=cfg)
    assert [r["decision"] for r in recs] == ["kept", "duplicate", "roundtrip", "leakage", "roundtrip"]
    assert [r["roundtrip_rank"] for r in recs] == [1, 3, 57, 2, None]
    assert recs[2]["decision_detail"] == "source doc rank 57 > k=5"
    assert recs[4]["decision_detail"] == "source doc not in top 100"
    assert recs[3]["decision_detail"].startswith("eval=t1 set=test via=lexical")
    assert report["roundtrip"]["keep_rate"] == pytest.approx(3 / 5)


def test_registered_with_the_judges_responder():
    from tests.support.judge_responder import respond as combined
    from tests.support import query_responder as qr
    from grouprank.queries import templates as T
    msgs = T.get("question").messages("Vitamin D and relapses in multiple sclerosis",
                                      "Low vitamin D levels predicted relapses of multiple sclerosis.")
    assert qr.matches(msgs)
    assert combined(msgs, {"model": "x"}) == qr.respond(msgs, {"model": "x"})
    from grouprank.queries.generation import parse_query
    q = parse_query(combined(msgs, {}), T.get("question"), msgs[1]["content"])["query"]
    assert q.endswith("?") and ("vitamin" in q or "sclerosis" in q or "relapses" in q)


def test_endpoint_failures_are_recorded_as_generation_failed(load, tmp_path):
    from grouprank.config import LLMEndpoint
    from grouprank.llm import LLMClient
    from grouprank.queries.generation import generate_queries
    docs = load("scifact").documents.slice(0, 2)
    with start_local_server("tests.support.query_responder:respond", faults={"500": 1.0}) as srv:
        ep = LLMEndpoint(name="down", base_url=srv.base_url, model="m", max_retries=1, backoff_base_s=0.01)
        with LLMClient(ep, cache_path=tmp_path / "c.sqlite", stage="queries") as client:
            recs = generate_queries(docs, docs["doc_id"].to_pylist(), client, ["keyword"], collection="scifact")
        assert srv.stats(detail=False)["requests"] == 4  # 2 prompts x (1 try + 1 retry)
    assert [r["decision"] for r in recs] == ["generation_failed"] * 2
    assert all(r["text"] == "<no answer>" and "http_500" in r["decision_detail"] for r in recs)
    QUERIES.from_records(recs)


def test_exclude_eval_docs_and_few_shot_with_a_fake_client(load, tmp_path):
    """The generation step's bookkeeping without HTTP: which documents are sampled, the few-shot
    examples in the prompts, the records."""
    from grouprank.llm.types import LLMResult
    from grouprank.queries.mine import eval_queries, existing_queries, generate

    class FakeClient:
        class endpoint:  # noqa: N801
            model = "fake"

        def __init__(self):
            self.reqs = []

        def map(self, reqs, progress=None):
            self.reqs += reqs
            return [LLMResult(text='{"query": "q"}', parsed=r.validate('{"query": "fake query"}'), status="ok",
                              error=None, request_hash="h", meta=r.meta) for r in reqs]

        def usage(self):
            return {"calls": len(self.reqs)}

    c = load("scifact")
    cfg = RunConfig.model_validate({"work_dir": str(tmp_path), "queries": {
        "generate": True, "generate_docs": 5000, "exclude_eval_docs": True, "few_shot": 3,
        "query_types": ["keyword"], "min_doc_chars": 0}})
    existing = existing_queries(cfg, c.queries, "scifact")
    evals = eval_queries(cfg, c.queries, "scifact")
    fake = FakeClient()
    recs, info = generate(cfg, c.documents, existing, c.qrels, evals, client=fake, collection="scifact")
    test_docs = set(c.qrels_for("test")["doc_id"].to_pylist())
    sampled = {r["source_doc_id"] for r in recs}
    assert info["excluded_eval_docs"] == len(test_docs) and not sampled & test_docs
    assert len(sampled) == c.documents.num_rows - len(test_docs) == info["sampled_docs"]
    assert info["few_shot"] == 3 and fake.reqs[0].messages[1]["content"].count("<example>") == 3
    assert {r["decision"] for r in recs} == {"kept"} and recs[0]["generator_model"] == "fake"
