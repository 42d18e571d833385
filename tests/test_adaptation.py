"""Corpus-only adaptation (grouprank.adaptation): pseudo-queries, the trivial-pair check, the teacher's
combination, training rows, and a user's BEIR folder with no queries and no qrels end to end."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from grouprank.adaptation.pseudo_queries import copied_run, make_pseudo_queries, trivial
from grouprank.adaptation.recipe import training_rows
from grouprank.adaptation.teacher import Pools, rank_of, source_metrics

CRAN_TITLE = "experimental investigation of the aerodynamics of a wing in a slipstream"
CRAN_BODY = (CRAN_TITLE + " . an experimental study of a wing in a propeller slipstream was made in order to "
             "determine the spanwise distribution of the lift increase due to slipstream. The results were "
             "intended in part as an evaluation basis for different theoretical treatments of this problem. "
             "The comparative span loading curves, together with supporting evidence, showed that a substantial "
             "part of the lift increment produced by the slipstream was due to a destalling action.")


def test_trivial_flags_a_query_copied_into_its_positive_not_a_paraphrase():
    assert trivial(CRAN_TITLE, CRAN_BODY)  # Cranfield: the title opens the text
    assert copied_run(CRAN_TITLE, CRAN_BODY) == (11, 11)
    assert not trivial("lift of a wing behind a propeller", "the spanwise distribution of the lift increase")
    # a short keyword query present verbatim is how retrieval works, not a copy
    assert not trivial("wing slipstream", CRAN_BODY)


def test_title_query_positive_loses_every_copy_of_the_title():
    (view,) = make_pseudo_queries(["1"], [CRAN_TITLE], [CRAN_BODY], per_doc=1, seed=0, kinds=("title",))
    (q,) = view
    assert q.kind == "title" and q.text == CRAN_TITLE
    assert CRAN_TITLE not in q.positive and "spanwise distribution" in q.positive
    assert not q.trivial  # with the title stripped, the pair is no longer solvable by copying


def test_sentence_queries_skip_the_first_sentence_and_leave_their_positive():
    views = make_pseudo_queries(["1"], [None], [CRAN_BODY], per_doc=2, seed=3, kinds=("sentence",))
    qs = [q for v in views for q in v]
    assert len(qs) == 2 and len({q.text for q in qs}) == 2
    first = CRAN_BODY.split(" . ")[0]
    for q in qs:
        assert not q.text.startswith(first[:30])
        assert q.text not in q.positive and len(q.text.split()) <= 16
        assert not q.trivial


def test_untitled_unpunctuated_abstract_gives_its_lead_phrase_or_a_span():
    # NPL: no title field, no punctuation; the title-like lead is set off by a double space
    body = ("compact memories have flexible capacities  a digital data storage system with capacity up to "
            "bits and random and or sequential access is described together with the circuits of its "
            "read and write amplifiers and the timing of its magnetic core matrix")
    (v0, v1) = make_pseudo_queries(["n1"], [None], [body], per_doc=2, seed=1)
    assert (v0[0].kind, v0[0].text) == ("lead", "compact memories have flexible capacities")
    assert "compact memories" not in v0[0].positive and "digital data storage" in v0[0].positive
    assert v1[0].kind == "span" and len(v1[0].text.split()) == 12
    assert v1[0].text not in v1[0].positive and not v1[0].trivial


def test_pools_combine_standard_scores_with_weights():
    # 1 query, 4 documents: BM25 prefers doc 0, mpnet doc 2; with mpnet weighted 2 doc 2 wins
    scores = {"bm25": np.array([[9.0, 1.0, 5.0, 0.0]]), "mpnet": np.array([[0.1, 0.2, 0.9, 0.3]])}
    p = Pools(scores, depth=4)
    assert p.ranking(0, {"bm25": 1.0})[0][0] == 0
    assert p.ranking(0, {"mpnet": 1.0})[0][0] == 2
    order, comb = p.ranking(0, {"bm25": 1.0, "mpnet": 2.0})
    assert order[0] == 2 and comb[0] > comb[1]
    assert rank_of(order, 0) == 2 and rank_of(order, 7) is None
    m = source_metrics([1, 2, None])
    assert m["MRR@10"] == round((1 + 0.5) / 3, 4) and m["R@10"] == round(2 / 3, 4)


def test_training_rows_keep_teacher_agreed_non_trivial_pairs_with_a_ranked_negative():
    from grouprank.adaptation.pseudo_queries import PseudoQuery
    n = 40
    rng = np.random.default_rng(0)
    s = rng.normal(size=(3, n))
    s[0, 5] = 10  # query 0: the teacher puts its source (5) first
    s[1, 5] = 10  # query 1: source 6 is far down -> teacher disagrees
    s[2, 7] = 10  # query 2: agreed but trivial -> dropped
    pools = Pools({"bm25": s}, depth=n)
    qs = [PseudoQuery("a", "5", "q a", "sentence", "pos a", False),
          PseudoQuery("b", "6", "q b", "sentence", "pos b", False),
          PseudoQuery("c", "7", "q c", "title", "pos c", True)]
    corpus = [f"doc {i}" for i in range(n)]
    fr, st = training_rows(qs, pools, [5, 6, 7], corpus, {"bm25": 1.0}, keep_top=3, neg_ranks=(10, 30))
    assert st == {"queries": 3, "trivial": 1, "teacher_disagrees": 1, "no_negative": 0, "rows": 1}
    row = fr.iloc[0]
    assert row.anchor == "q a" and row.positive == "pos a"
    order = pools.ranking(0, {"bm25": 1.0})[0]
    assert 10 <= rank_of(order, int(row.negative_1.split()[1])) <= 30
    assert row.label[0] > 0  # the teacher's margin: positive above negative


def test_a_recipe_above_its_teacher_on_synthetic_queries_is_not_chosen():
    from grouprank.adaptation.arm import choose_recipe
    # DL19's numbers (bench/results/adapt/trec_dl19_passage.json): both recipes beat the teacher -> base
    dl19 = {"base": 0.261, "mnrl@3": 0.3082, "mnrl+margin_mse@3": 0.3119}
    assert choose_recipe(dl19, 0.2938) == ("base", ["mnrl+margin_mse@3", "mnrl@3"])
    # only the one above the teacher drops out; the best of the rest wins
    assert choose_recipe(dl19, 0.31) == ("mnrl@3", ["mnrl+margin_mse@3"])
    # Cranfield's: all under the teacher, the best synthetic score wins
    cran = {"base": 0.5861, "mnrl@3": 0.6313, "mnrl+margin_mse@3": 0.6421}
    assert choose_recipe(cran, 0.6874) == ("mnrl+margin_mse@3", [])
    # nothing beats the base: kept, unless told to train anyway
    low = {"base": 0.5, "mnrl@3": 0.45, "mnrl+margin_mse@3": 0.48}
    assert choose_recipe(low, 0.6) == ("base", [])
    assert choose_recipe(low, 0.6, keep_base=False) == ("mnrl+margin_mse@3", [])


def test_the_student_is_the_retriever_section_s_model_one_name_per_knob():
    """The student, its window and backend are set where the retrieve and train_retriever stages read
    them; the old adaptation keys are refused with the new key's name, not silently ignored."""
    from grouprank.adaptation.config import AdaptationConfig, Student, student_of
    from grouprank.config import RunConfig
    cfg = RunConfig.model_validate({"retriever": {"base_model": "/models/my-e5"},
                                    "retrieval": {"max_seq_length": 128, "dense_backend": "onnx"}})
    assert student_of(cfg) == Student("/models/my-e5", 128, "onnx")
    for old, new in (("student", "retriever.base_model"), ("student_tokens", "retrieval.max_seq_length"),
                     ("backend", "retrieval.dense_backend")):
        with pytest.raises(ValueError, match=f"adaptation.{old} was replaced by {new}"):
            AdaptationConfig.model_validate({old: "x"})


@pytest.mark.timeout(600)
def test_bare_beir_folder_goes_through_the_adapt_stage(tmp_path, capsys):
    """No queries.jsonl, no qrels/: `grouprank adapt` makes its own queries, picks a teacher, trains,
    writes the examples (schema-checked), the chosen model and a report that says it was not scored;
    the second run comes from the cache."""
    from sentence_transformers import SentenceTransformer

    from data_schemas import ADAPTATION_EXAMPLES
    from grouprank.cli import main
    from grouprank.collections import load_collection
    cisi = load_collection("cisi").documents.slice(0, 80).to_pylist()  # real abstracts, written as a user's corpus
    folder = tmp_path / "mine"
    folder.mkdir()
    with open(folder / "corpus.jsonl", "w") as f:
        for d in cisi:
            f.write(json.dumps({"_id": d["doc_id"], "title": d["title"], "text": d["text"]}) + "\n")
    coll = load_collection("mine", format="beir", path=str(folder))
    assert coll.queries.num_rows == 0 and coll.qrels.num_rows == 0
    small = ["--set", "adaptation.recipes=[\"mnrl\"]", "--set", "adaptation.max_train_rows=64",
             "--set", "adaptation.max_holdout=12", "--set", "retrieval.max_seq_length=64",
             "--set", "adaptation.mpnet_tokens=64", "--set", "adaptation.train_tokens=64",
             "--set", "adaptation.depth=20", "--set", "adaptation.neg_ranks=[4,12]"]
    wd = tmp_path / "work"
    argv = ["adapt", "--format", "beir", "--path", str(folder), "--work-dir", str(wd), *small]
    assert main(argv) == 0
    out = wd / "adapt"
    rep = json.loads((out / "adaptation_report.json").read_text())
    arm = rep["arm"]
    assert rep["enabled"] and rep["test"] is None and "not scored" in rep["note"]
    assert 1 <= arm["pseudo_queries"]["held_out"] <= 12 and arm["train_rows"] > 0
    assert arm["teacher"] != "minilm" and set(arm["validation"]["recipes"]) == {"base", "mnrl"}
    assert arm["chosen"] in ("base", "mnrl") and arm["train"]["mnrl"]["steps"] >= 1
    ex = ADAPTATION_EXAMPLES.read(out / "adaptation_examples.parquet")
    assert ex.num_rows == arm["train_rows"]
    ids = {d["doc_id"] for d in cisi}
    for r in ex.to_pylist():
        assert r["positive_doc_id"] in ids and r["negative_doc_id"] in ids
        assert r["negative_doc_id"] != r["positive_doc_id"]
        assert re.fullmatch(r"pq\d-" + re.escape(r["positive_doc_id"]), r["query_id"]), r["query_id"]
        src = next(d for d in cisi if d["doc_id"] == r["positive_doc_id"])
        if r["kind"] == "title":  # its positive lost every copy of the title
            assert src["title"].lower() not in r["positive"].lower()
    m = SentenceTransformer(str(out / "adapted_model"), device="cpu")
    assert m.encode(["a test"]).shape == (1, 384)
    capsys.readouterr()
    assert main(argv) == 0  # unchanged inputs and settings: reused, not retrained
    assert "cached" in capsys.readouterr().out


def _docs_table(n: int = 40):
    import pyarrow as pa
    rows = [{"doc_id": f"d{i}", "title": f"study {i} of library catalogue use by readers",
             "text": f"Readers of library {i} were surveyed about the catalogue. The survey asked how often "
                     f"the catalogue was used and for what purpose in library {i}. Most readers searched by "
                     f"author rather than subject, which the catalogue supports poorly."} for i in range(n)]
    return pa.Table.from_pylist(rows)


def test_llm_generated_questions_join_training_only_with_their_whole_document(tmp_path):
    """generated_docs: seeded training documents (never a held-out one) get one LLM question each, as
    one more view whose positive is the whole document; failures are counted, not turned into queries;
    a question pasting its document is trivial and does not train; no endpoint -> a clear error."""
    from grouprank.adaptation.arm import CorpusArm
    from grouprank.adaptation.config import AdaptationConfig
    from grouprank.errors import UserError
    docs = _docs_table()
    asked: list[list[str]] = []

    def generate(ids):
        asked.append(list(ids))
        out = []
        for k, d in enumerate(ids):
            rec = {"source_doc_id": d, "decision": "kept", "text": f"how do readers search catalogue number {d}?"}
            if k % 4 == 1:
                rec.update(decision="parse_error", text="The document provides a detailed answer.")
            if k % 4 == 2:  # pastes the document's second sentence
                rec["text"] = f"the survey asked how often the catalogue was used and for what purpose in library {d[1:]}"
            out.append(rec)
        return out

    arm = CorpusArm(docs, tmp_path, AdaptationConfig(generated_docs=12, max_holdout=6), seed=5, generate=generate)
    per_doc, views, held, train_q, *_ = arm._pseudo_queries()
    n_before = len(train_q)
    counts = arm._generated(views, held, train_q)
    assert len(asked) == 1 and len(asked[0]) == 12 == len(set(asked[0]))
    assert not set(asked[0]) & {q.doc_id for q in held}
    assert counts == {"requested": 12, "kept": 9, "parse_error": 3, "trivial": 3}
    llm = views[-1]
    assert len(views) == per_doc + 1 and len(llm) == 9 and {q.kind for q in llm} == {"llm"}
    for q in llm:
        assert q.query_id == f"pq{per_doc}-{q.doc_id}" and q.positive == arm.texts[arm.pos[q.doc_id]]
    assert len(train_q) == n_before + 6 and all(not q.trivial for q in train_q)
    assert arm._view(llm) == (arm.texts, [])  # nothing stripped: no document re-encoded
    arm2 = CorpusArm(docs, tmp_path, AdaptationConfig(generated_docs=12, max_holdout=6), seed=5, generate=generate)
    _, views2, held2, train2, *_ = arm2._pseudo_queries()
    arm2._generated(views2, held2, train2)
    assert asked[1] == asked[0]  # seeded: the same documents again (the LLM cache answers them)
    with pytest.raises(UserError, match="generated_docs needs an LLM endpoint"):
        CorpusArm(docs, tmp_path, AdaptationConfig(generated_docs=3))._generated([[]], [], [])


def test_stage_generator_asks_a_real_server_once_and_records_every_answer(tmp_path):
    """The adapt stage's generator goes through the run's LLM client to an OpenAI-compatible server on
    127.0.0.1 (a scripted responder, not a model): one `question` request per document, records with
    a decision each, and a second call answered from the run's cache (the server sees nothing new)."""
    from grouprank.adaptation.stage import generator
    from grouprank.config import RunConfig
    from tests.support.fake_openai_server import start_local_server
    docs = _docs_table(6)
    with start_local_server("tests.support.query_responder:respond", seed=3) as srv:
        cfg = RunConfig.model_validate({"work_dir": str(tmp_path), "llm": {"endpoints": [
            {"name": "gen", "base_url": srv.base_url, "model": "extractive", "max_retries": 0}]}})
        ids = ["d4", "d1", "d2"]
        recs = generator(cfg, docs)(ids)
        sent = srv.stats()["requests"]
        assert [r["source_doc_id"] for r in recs] == ids and sent >= 3
        assert {r["query_type"] for r in recs} == {"question"}
        assert all(r["decision"] in ("kept", "parse_error") for r in recs) and any(r["decision"] == "kept" for r in recs)
        assert generator(cfg, docs)(ids) == recs and srv.stats()["requests"] == sent
