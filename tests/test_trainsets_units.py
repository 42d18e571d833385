"""Dataset builders, piece by piece: group sampling, prompt/gold alignment, SFT targets (fused and
teacher), the false-negative guard (property test), shards and atomic writes.

Real data: TREC DL19 passages with their NIST graded qrels (0-3) as labels, ordered by BM25."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_schemas import JUDGMENTS, RERANKER_RL
from grouprank.config import DatasetsConfig
from grouprank.scoring.rng import seeded_rng
from grouprank.trainsets.common import QueryLabels, labels_by_query
from grouprank.atomic import atomic_write
from grouprank.trainsets.export import plan_shards, write_sharded
from grouprank.trainsets.reranker import teacher_groups
from grouprank.trainsets.retriever import GuardSpec, build_retriever_examples
from grouprank.trainsets.sampling import SamplingSpec, sample_groups
from grouprank.trainsets.stage import build_datasets

N_QUERIES = 8


@pytest.fixture(scope="module")
def dl19(load):
    """(documents, queries, candidates, labels) for the first N_QUERIES judged DL19 queries."""
    from tests.support.bm25_candidates import dl19_training_inputs
    return dl19_training_inputs(load("trec_dl19_passage"), N_QUERIES)


# --------------------------------------------------------------------------- sampling

def test_seeded_rng_is_independent_of_other_queries():
    a = [seeded_rng(13, "groups", "q1").random() for _ in range(3)]
    seeded_rng(13, "groups", "q2").random()
    assert a == [seeded_rng(13, "groups", "q1").random() for _ in range(3)]
    assert seeded_rng(13, "groups", "q1").random() != seeded_rng(14, "groups", "q1").random()


def test_groups_sizes_mix_and_top_share():
    ranking = [f"d{i:02d}" for i in range(40)]
    grades = {d: (3 if i < 3 else 0) for i, d in enumerate(ranking)}  # 3 relevant, all at the top
    spec = SamplingSpec(group_min=5, group_max=20, groups_per_query=200, top_share=0.5, top_window=10, seed=1)
    stats: dict = {}
    groups = sample_groups("q", ranking, grades, spec, stats)
    assert len(groups) == 200
    sizes = Counter(len(g) for g in groups)
    assert set(sizes) <= set(range(5, 21)) and len(sizes) >= 12  # multi-scale, roughly uniform
    for g in groups:
        assert len(set(g)) == len(g)
        assert any(grades[d] > 0 for d in g) and any(grades[d] == 0 for d in g)
        n_top = round(0.5 * len(g))
        assert sum(ranking.index(d) < max(10, n_top) for d in g) >= n_top - 1  # a mixing swap may take one
    assert stats.get("duplicate_groups_kept", 0) == 0
    # shuffled: the top documents are not always first
    assert sum(ranking.index(g[0]) < 3 for g in groups) < 100


def test_size_weights_and_small_pools():
    ranking = [f"d{i}" for i in range(30)]
    grades = {d: i % 2 for i, d in enumerate(ranking)}
    spec = SamplingSpec(group_min=5, group_max=20, groups_per_query=300, size_weights={5: 1, 7: 3}, seed=2)
    sizes = Counter(len(g) for g in sample_groups("q", ranking, grades, spec))
    assert set(sizes) == {5, 7} and sizes[7] > 2 * sizes[5]
    stats: dict = {}
    assert sample_groups("q", ranking[:4], grades, spec, stats) == []
    assert stats["queries_too_few_docs"] == 1
    assert {len(g) for g in sample_groups("q", ranking[:6], grades, SamplingSpec(group_min=5, group_max=20))} <= {5, 6}
    with pytest.raises(ValueError, match="outside"):
        SamplingSpec(group_min=5, group_max=20, size_weights={3: 1}).sizes()


def _dc(**kw) -> DatasetsConfig:
    return DatasetsConfig(**kw)


def test_groups_per_query_do_not_depend_on_other_queries(dl19):
    docs, queries, cand, labels = dl19
    all_rl, _, _, _ = build_datasets(_dc(), documents=docs, queries=queries, labels=labels, candidates=cand)
    some = sorted(set(labels["query_id"].to_pylist()))[2:5]
    sub = labels.filter(pa.compute.is_in(labels["query_id"], pa.array(some)))
    sub_rl, _, _, _ = build_datasets(_dc(), documents=docs, queries=queries, labels=sub, candidates=cand)
    want = [r for r in all_rl.to_pylist() if r["query_id"] in some]
    assert sub_rl.to_pylist() == want and len(want) == 3 * len(some)
    other, _, _, _ = build_datasets(_dc(), documents=docs, queries=queries, labels=labels, candidates=cand, seed=99)
    assert other["doc_ids"].to_pylist() != all_rl["doc_ids"].to_pylist()


def test_prompt_order_matches_gold_and_targets_score_perfectly(dl19):
    from grouprank.prompts.common import clean_text as clean_doc
    from grouprank.prompts.groupwise import SYSTEM_PROMPT, TEMPLATE_VERSION, parse_output
    from grouprank.reranker.reward import reward_one
    docs, queries, cand, labels = dl19
    rl, sft, ret, stats = build_datasets(_dc(), documents=docs, queries=queries, labels=labels, candidates=cand)
    assert TEMPLATE_VERSION == "groupwise@1"
    text = dict(zip(docs["doc_id"].to_pylist(), docs["text"].to_pylist()))
    qtext = dict(zip(queries["query_id"].to_pylist(), queries["text"].to_pylist()))
    grade = {(q, d): g for q, d, g in zip(labels["query_id"].to_pylist(), labels["doc_id"].to_pylist(),
                                           labels["grade"].to_pylist())}
    fused = {(q, d): s for q, d, s in zip(labels["query_id"].to_pylist(), labels["doc_id"].to_pylist(),
                                           labels["fused_score"].to_pylist())}
    assert rl.num_rows == 3 * N_QUERIES == sft.num_rows
    for r, s in zip(rl.to_pylist(), sft.to_pylist()):
        assert r["example_id"] == s["example_id"] and r["doc_ids"] == s["doc_ids"]
        assert [m["role"] for m in r["prompt"]] == ["system", "user"]
        assert r["prompt"][0]["content"] == SYSTEM_PROMPT
        user = r["prompt"][1]["content"]
        assert qtext[r["query_id"]] in user
        blocks = re.findall(r'<document id="\[(\d+)\]">\n(.*?)\n</document>', user, re.S)
        assert [int(i) for i, _ in blocks] == list(range(1, r["group_size"] + 1))
        assert [b for _, b in blocks] == [clean_doc(text[d], 3000) for d in r["doc_ids"]]
        assert r["gold_grades"] == [grade[(r["query_id"], d)] for d in r["doc_ids"]]
        assert r["gold_scores"] == [fused[(r["query_id"], d)] for d in r["doc_ids"]]
        assert 5 <= r["group_size"] <= 20 and len(set(r["doc_ids"])) == r["group_size"]
        assert 0 in r["gold_grades"] and max(r["gold_grades"]) > 0
        # SFT: same prompt + a target that parses strictly and ranks the group perfectly
        assert s["messages"][:2] == r["prompt"] and s["messages"][2]["role"] == "assistant"
        assert s["target_source"] == "fused_labels"
        target = s["messages"][2]["content"]
        parsed = parse_output(target, r["group_size"], strict=True)
        assert parsed.ok and parsed.scores == [float(round(10 * g / 3)) for g in r["gold_grades"]]
        parts = reward_one(target, r["gold_grades"], r["gold_scores"])
        assert parts.status == "ok" and parts.ndcg == pytest.approx(1.0)
    assert json.loads(stats["group_size_counts"])


def _judgment(q, d, pos, score, *, group="g0", reason="[1] is best.", status="ok", pass_index=0):
    return {"query_id": q, "doc_id": d, "judge_id": "gw", "kind": "groupwise", "model": "m",
            "template_version": "judge.groupwise@1", "pass_index": pass_index,
            "group_id": f"{group}#{pos}" if pos else group, "score": score if status == "ok" else None,
            "rank": None, "rationale": reason, "request_hash": "h", "status": status,
            "error": None if status == "ok" else "timeout", "injection_flag": False,
            "prompt_tokens": 10, "completion_tokens": 5}


def test_teacher_targets_are_the_groupwise_judges_own_answers(dl19, tmp_path, monkeypatch):
    """The groupwise judge, run through the LLM client against the local OpenAI-compatible server,
    writes `<group>#<position>` group ids; the SFT view then holds each judged group verbatim: the
    exact messages the judge sent (recorded as sent, not rebuilt here) and, as the target, the exact
    answer the judge received for them (recorded as received, not asked again). The responder's
    scores depend on the documents' positions, so a group rebuilt in another order, or scores put
    back in the wrong places, give a different target."""
    from grouprank.config import JudgeSpec, LLMEndpoint, RunConfig
    from grouprank.judges.base import JudgePool
    from grouprank.scoring.groupwise import GroupwiseMode
    from grouprank.judges.runner import run_judges
    from grouprank.llm.client import LLMClient
    from tests.support.fake_openai_server import start_local_server
    sent: list[tuple[list, str]] = []  # (messages, answer text) of every groupwise request the judge made
    real_amap = LLMClient.amap

    async def recording_amap(self, reqs, progress=None):
        results = await real_amap(self, reqs, progress)
        sent.extend((list(q.messages), r.text) for q, r in zip(reqs, results) if r.ok)
        return results
    monkeypatch.setattr(LLMClient, "amap", recording_amap)
    docs, queries, cand, labels = dl19
    labs = labels_by_query(labels)
    qids = sorted(labs)[:2]
    pool_rows = [{"query_id": q, "doc_id": d, "rank": i} for q in qids for i, d in enumerate(labs[q].doc_ids[:7], 1)]
    pool = JudgePool.from_tables(pa.Table.from_pylist(pool_rows), docs, queries)
    spec = JudgeSpec(id="gw", kind="groupwise", group_size=3, passes=1)
    with start_local_server("tests.support.judge_responder:respond", env={"GROUPRANK_JUDGE_CORPUS": "trec_dl19_passage"},
                            startup_timeout=120) as srv:
        ep = LLMEndpoint(name="local", base_url=srv.base_url, model="local-responder", max_concurrency=4)
        cfg = RunConfig.model_validate({"work_dir": str(tmp_path), "llm": {"endpoints": [ep.model_dump()]},
                                        "judges": {"judges": [spec.model_dump()]}})
        rows, _ = run_judges(cfg, pool)
    judg = JUDGMENTS.from_records(rows)
    _, sft, _, st = build_datasets(_dc(sft_source="teacher"), documents=docs, queries=queries, labels=labels,
                                   candidates=cand, judgments=judg, max_doc_chars=cfg.prompts.max_doc_chars)

    # every judgment row names its group and its position in the judge's prompt
    assert all(re.fullmatch(r"p0g\d+#[1-3]", r["group_id"]) for r in rows)
    sft_rows = sft.to_pylist()
    mode = GroupwiseMode(group_size=3, passes=1, seed=cfg.seed)                  # the judge's seed: the run's
    groups = {q: mode.groups(q, pool.pools[q], 0) for q in qids}
    assert len(sft_rows) == sum(len(g) for g in groups.values()) == st["sft_target_teacher"] == len(sent) == 6
    judged = {json.dumps(m, sort_keys=True): a for m, a in sent}
    # the responder scores by content and position: the six answers are not all the same text
    assert len(set(judged.values())) > 1
    for r in sft_rows:
        assert r["target_source"] == "teacher:gw"
        assert r["doc_ids"] in groups[r["query_id"]]                 # the judge's own order
        key = json.dumps(r["messages"][:2], sort_keys=True)
        assert key in judged, "the SFT prompt is not a prompt the judge sent"
        assert r["messages"][2] == {"role": "assistant", "content": judged[key]}   # the answer, verbatim


def test_teacher_rows_without_positions_or_incomplete(dl19):
    """Judgments without a recorded prompt order (no `#<position>`; e.g. from an older run) keep
    the judge's scores with a templated rationale; an incomplete group falls back to fused labels."""
    docs, queries, cand, labels = dl19
    labs = labels_by_query(labels)
    q2, q3 = sorted(labs)[1:3]
    d2 = labs[q2].doc_ids[:5]
    d3 = labs[q3].doc_ids[:5]
    rows = [_judgment(q2, d, None, s) for d, s in zip(d2, (9, 0, 4, 7, 1))]  # no positions recorded
    rows += [_judgment(q3, d, i, 5, status="failed" if i == 2 else "ok") for i, d in enumerate(d3, 1)]
    judg = JUDGMENTS.from_records(rows)
    stats: dict = {}
    groups = teacher_groups(judg, stats)
    assert stats["teacher_groups_incomplete"] == 1 and set(groups) == {q2}
    _, sft, _, st2 = build_datasets(_dc(), documents=docs, queries=queries, labels=labels, candidates=cand,
                                    judgments=judg)
    by_q = {}
    for r in sft.to_pylist():
        by_q.setdefault(r["query_id"], []).append(r)
    (t2,) = by_q[q2]
    assert t2["target_source"] == "teacher_scores:gw" and sorted(t2["doc_ids"]) == sorted(d2)
    want = dict(zip(d2, (9, 0, 4, 7, 1)))
    assert f'"[1]": {want[t2["doc_ids"][0]]}' in t2["messages"][2]["content"]
    assert all(r["target_source"] == "fused_labels" for r in by_q[q3])  # auto: falls back per query
    assert st2["sft_target_teacher_scores"] == 1 and "sft_target_teacher" not in st2
    _, sft_f, _, _ = build_datasets(_dc(sft_source="fused"), documents=docs, queries=queries, labels=labels,
                                    candidates=cand, judgments=judg)
    assert set(sft_f["target_source"].to_pylist()) == {"fused_labels"}
    _, sft_t, _, _ = build_datasets(_dc(sft_source="teacher"), documents=docs, queries=queries, labels=labels,
                                    candidates=cand, judgments=judg)
    assert sft_t.num_rows == 1


# --------------------------------------------------------------------------- retriever + guard

def test_retriever_training_examples_on_dl19(dl19):
    docs, queries, cand, labels = dl19
    _, _, ret, stats = build_datasets(_dc(negatives_per_example=4), documents=docs, queries=queries, labels=labels,
                                      candidates=cand)
    grade = {(q, d): g for q, d, g in zip(labels["query_id"].to_pylist(), labels["doc_id"].to_pylist(),
                                           labels["grade"].to_pylist())}
    rank = {(q, d): r for q, d, r in zip(cand["query_id"].to_pylist(), cand["doc_id"].to_pylist(),
                                          cand["rank"].to_pylist())}
    assert ret.num_rows > 0
    for r in ret.to_pylist():
        assert r["positive_grade"] >= 2 and grade[(r["query_id"], r["positive_doc_id"])] == r["positive_grade"]
        assert len(r["negatives"]) == 4
        assert all(grade[(r["query_id"], d)] == 0 for d in r["negative_doc_ids"])
        ranks = [rank[(r["query_id"], d)] for d in r["negative_doc_ids"]]
        assert ranks == sorted(ranks)  # hardest (highest-ranked by the retriever) first
    removed = sum(stats[f"guard_{k}"] for k in ("unlabelled", "grade_at_or_above_positive",
                                                 "grade_above_negative_max", "duplicate_text"))
    assert removed + stats["negative_candidates_eligible"] == stats["negative_candidates_considered"]
    assert stats["guard_grade_at_or_above_positive"] > 0 and stats["guard_grade_above_negative_max"] > 0


def test_margin_rule_removes_close_negatives():
    ql = QueryLabels("q", ["p", "a", "b", "c"], {"p": 2, "a": 0, "b": 0, "c": 0},
                     {"p": 1.0, "a": 0.97, "b": 0.5, "c": 0.0}, {"p": 1, "a": 2, "b": 3, "c": 4})
    ret, stats = build_retriever_examples({"q": ql}, {"q": "query"}, {d: f"text {d}" for d in "pabc"},
                                          {"q": ["a", "p", "b", "c"]}, GuardSpec(margin=0.05, negatives=4))
    (row,) = ret.to_pylist()
    assert row["negative_doc_ids"] == ["b", "c"]
    assert stats["guard_fused_margin_pairs"] == 1 and stats["guard_fused_margin_docs"] == 1
    # duplicate text of the positive is a false negative too
    ret, stats = build_retriever_examples({"q": ql}, {"q": "query"}, {"p": "Same  text", "a": "x", "b": "same text",
                                                                      "c": "y"},
                                          {"q": ["a", "p", "b", "c"]}, GuardSpec(margin=0.0, negatives=4))
    assert ret.to_pylist()[0]["negative_doc_ids"] == ["a", "c"] and stats["guard_duplicate_text"] == 1


def test_fallback_positive_and_negatives_from_a_rank_on():
    """A query whose best document is graded below the positive grade trains on it only with a fallback
    grade it reaches; negative_min_rank skips the retrieval's top ranks."""
    ql = QueryLabels("q", ["p", "a", "b", "c", "d"], {"p": 1, "a": 0, "b": 0, "c": 0, "d": 0},
                     {"p": 1.0, "a": 0.5, "b": 0.4, "c": 0.3, "d": 0.2}, {"p": 1, "a": 2, "b": 3, "c": 4, "d": 5})
    args = ({"q": ql}, {"q": "query"}, {d: f"text {d}" for d in "pabcd"}, {"q": ["p", "a", "b", "c", "d"]})
    ret, stats = build_retriever_examples(*args, GuardSpec(positive_grade=2, negative_max_grade=1, negatives=2))
    assert ret.num_rows == 0 and stats["queries_without_positive"] == 1
    ret, stats = build_retriever_examples(*args, GuardSpec(positive_grade=2, negative_max_grade=0, negatives=2,
                                                           fallback_grade=2))
    assert ret.num_rows == 0  # the best document (grade 1) is below the fallback grade
    ret, stats = build_retriever_examples(*args, GuardSpec(positive_grade=2, negative_max_grade=0, negatives=2,
                                                           fallback_grade=1))
    (row,) = ret.to_pylist()
    assert row["positive_doc_id"] == "p" and row["negative_doc_ids"] == ["a", "b"]
    assert stats["positives_from_fallback"] == 1 and stats["queries_without_positive"] == 0
    ret, _ = build_retriever_examples(*args, GuardSpec(positive_grade=2, negative_max_grade=0, negatives=2,
                                                       fallback_grade=1, negative_min_rank=4))
    assert ret.to_pylist()[0]["negative_doc_ids"] == ["c", "d"]  # retrieval ranks 4 and 5
    # the config reaches the guard
    dc = DatasetsConfig(positive_fallback_grade=1, negative_min_rank=4)
    assert (GuardSpec.from_config(dc).fallback_grade, GuardSpec.from_config(dc).negative_min_rank) == (1, 4)


@st.composite
def guard_case(draw):
    n = draw(st.integers(2, 25))
    docs = [f"d{i}" for i in range(n)]
    grades = {d: draw(st.one_of(st.none(), st.integers(0, 3))) for d in docs}
    fused = {d: draw(st.floats(-10, 10, allow_nan=False)) for d in docs}
    pool = draw(st.permutations(docs))
    pos_grade = draw(st.integers(1, 3))
    neg_max = draw(st.integers(0, pos_grade - 1))
    spec = GuardSpec(positive_grade=pos_grade, negative_max_grade=neg_max,
                     margin=draw(st.floats(0, 0.5)), negatives=draw(st.integers(0, 6)))
    texts = {d: draw(st.sampled_from(["alpha", "beta", "gamma", f"unique {d}"])) for d in docs}
    return grades, fused, list(pool), spec, texts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(guard_case())
def test_guard_never_emits_a_false_negative(case):
    grades, fused, pool, spec, texts = case
    labelled = [d for d in pool if grades[d] is not None]
    if not labelled:
        return
    order = sorted(labelled, key=lambda d: (-fused[d], d))
    ql = QueryLabels("q", order, {d: grades[d] for d in labelled}, {d: fused[d] for d in labelled},
                     {d: i for i, d in enumerate(order, 1)})
    ret, stats = build_retriever_examples({"q": ql}, {"q": "query"}, texts, {"q": pool}, spec)
    norm = ql.norm_fused()
    pos_texts = {" ".join(texts[d].lower().split()) for d in labelled if grades[d] >= spec.positive_grade}
    for r in ret.to_pylist():
        assert grades[r["positive_doc_id"]] >= spec.positive_grade
        assert len(r["negative_doc_ids"]) <= spec.negatives
        for d, g in zip(r["negative_doc_ids"], r["negative_grades"]):
            assert grades[d] is not None and grades[d] == g          # never unlabelled
            assert g < spec.positive_grade and g <= spec.negative_max_grade  # never graded positive
            assert norm[d] < norm[r["positive_doc_id"]] - spec.margin
            assert " ".join(texts[d].lower().split()) not in pos_texts
        idx = [pool.index(d) for d in r["negative_doc_ids"]]
        assert idx == sorted(idx)
    assert stats["negative_candidates_considered"] == len(pool) or stats["retriever_examples"] == 0


# --------------------------------------------------------------------------- shards, atomic writes

def test_shards_are_bounded_and_replace_stale_ones(tmp_path):
    t = RERANKER_RL.from_records([
        {"example_id": f"e{i:02d}", "query_id": "q", "prompt": [{"role": "user", "content": "x" * (10 + i)}],
         "doc_ids": ["d"], "gold_grades": [1], "gold_scores": [0.5], "group_size": 1} for i in range(20)])
    assert plan_shards(t, 7, 10**9) == [(0, 7), (7, 7), (14, 6)]
    assert len(plan_shards(t, 10**6, t.nbytes // 4)) >= 4  # byte bound
    paths = write_sharded(t, RERANKER_RL, tmp_path, max_rows=7, max_bytes=10**9)
    assert [p.name for p in paths] == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    back = pa.concat_tables([RERANKER_RL.read(p) for p in paths])
    assert back.to_pylist() == t.to_pylist()
    assert json.loads(pq.read_schema(paths[1]).metadata[b"grouprank.extra"])["num_shards"] == 3
    paths = write_sharded(t, RERANKER_RL, tmp_path, max_rows=100, max_bytes=10**9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-00000-of-00001.parquet"]


def test_atomic_write_leaves_nothing_on_crash(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def crash(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        atomic_write(target, crash)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


# --------------------------------------------------------------------------- real fusion, judges in the card

def _two_judges(labels: pa.Table) -> pa.Table:
    """A pointwise-like and a listwise judge whose outputs follow the human grades with
    deterministic disagreement (every 5th document is swapped a grade), as JUDGMENTS rows."""
    rows = []
    per: dict = {}
    for q, d, g in zip(labels["query_id"].to_pylist(), labels["doc_id"].to_pylist(), labels["grade"].to_pylist()):
        per.setdefault(q, []).append((d, g))
    for q, docs in sorted(per.items()):
        noisy = {d: (g + (1 if i % 5 == 0 else 0)) % 4 for i, (d, g) in enumerate(sorted(docs))}
        for d, g in docs:
            base = {"query_id": q, "doc_id": d, "template_version": "t@1", "pass_index": 0, "group_id": None,
                    "rationale": None, "request_hash": "h", "status": "ok", "error": None, "injection_flag": False,
                    "prompt_tokens": 7, "completion_tokens": 3}
            rows.append({**base, "judge_id": "point", "kind": "pointwise", "model": "m1",
                         "score": float(min(10, 3 * g)), "rank": None})
        order = sorted(docs, key=lambda x: (-noisy[x[0]], x[0]))
        for r, (d, _) in enumerate(order, 1):
            rows.append({**base, "query_id": q, "doc_id": d, "judge_id": "list", "kind": "listwise",
                         "model": "m2", "score": None, "rank": r})
    return JUDGMENTS.from_records(rows)


def test_real_fused_labels_guard_and_card_judges(dl19, tmp_path):
    from grouprank.config import RunConfig
    from grouprank.judges.fusion import fuse_labels
    from grouprank.trainsets.export_stage import export_datasets
    docs, queries, cand, human = dl19
    judg = _two_judges(human)
    labels = fuse_labels(judg, method="rank", beta=0.5, grade_scale=3)[0]
    assert set(labels["method"].to_pylist()) == {"rank_fusion"} and max(labels["fused_score"].to_pylist()) <= 0
    rl, sft, ret, stats = build_datasets(_dc(false_negative_margin=0.1), documents=docs, queries=queries,
                                         labels=labels, candidates=cand, judgments=judg)
    assert rl.num_rows == 3 * N_QUERIES and ret.num_rows > 0
    assert stats["guard_fused_margin_pairs"] > 0  # fused -log-rank scores put some grade-0 docs near positives
    lab = {(q, d): (g, s) for q, d, g, s in zip(labels["query_id"].to_pylist(), labels["doc_id"].to_pylist(),
                                                 labels["grade"].to_pylist(), labels["fused_score"].to_pylist())}
    for r in ret.to_pylist():
        assert all(lab[(r["query_id"], d)][0] == 0 for d in r["negative_doc_ids"])
    cfg = RunConfig(work_dir=str(tmp_path), data={"collection": "trec_dl19_passage"})
    res = export_datasets(cfg, tmp_path / "export", documents=docs, queries=queries, labels=labels,
                          reranker_rl=rl, reranker_sft=sft, retriever_examples=ret, judgments=judg, qrels=human,
                          build_stats=stats, build_config=_dc(false_negative_margin=0.1).model_dump())
    card = Path(res["outputs"]["readme"]).read_text()
    assert "fused score is within 0.1 of the positive's" in card
    assert "| point | pointwise | m1 |" in card and "| list | listwise | m2 |" in card
    m = re.search(r"\| list \| point \| (\d+) \| ([0-9.]+) \|", card)
    assert m and int(m.group(1)) == N_QUERIES and 0.5 < float(m.group(2)) < 1.0  # agree, not perfectly
    assert "kappa_weighted" in card and "rank_fusion" in card


def test_human_agreement_with_positive_only_qrels_counts_unlisted_pool_documents_as_0():
    """SciFact-style qrels list only cited documents: the pooled rest of a judged query is grade 0, so
    kappa, Spearman and Kendall exist; queries the qrels do not judge stay out."""
    import pyarrow as pa
    from grouprank.trainsets.card import human_agreement
    labels = pa.table({"query_id": ["q1"] * 4 + ["q2"] * 4 + ["q9"] * 2,
                       "doc_id": ["a", "b", "c", "d", "e", "f", "g", "h", "x", "y"],
                       "grade": [3, 2, 0, 0, 0, 3, 1, 0, 3, 0]})
    qrels = pa.table({"query_id": ["q1", "q2"], "doc_id": ["a", "f"], "grade": [1, 1]})
    h = human_agreement(labels, qrels)
    assert h["n"] == 8 and h["n_unlisted_as_0"] == 6 and h["queries"] == 2
    assert h["kappa_weighted"] is not None and h["spearman"] > 0.5 and h["kendall"] > 0.4
    # the fused grades disagreeing with the humans shows: swap the cited documents
    h2 = human_agreement(labels, pa.table({"query_id": ["q1", "q2"], "doc_id": ["d", "e"], "grade": [1, 1]}))
    assert h2["spearman"] < 0
