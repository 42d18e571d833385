"""No SciFact test claim, nor a near copy of one, reaches the retriever's training data.

Copies of test claims (exact, case/punctuation, typos, a prefix, a dropped word) are planted among
train claims *with the test claims' evidence documents as their qrels* (the worst case: leaked
examples would teach exactly what the evaluation tests). The query-mining stage with its leakage
guard (against all 300 test claims) runs on them; the retriever examples are then built from the
mined queries, and the retriever stage's own safety net runs last. Control: without the guard the
planted copies do reach the examples, so the test can fail."""
import random

import pyarrow as pa
import pytest

from grouprank.config import RunConfig

EDITS = {
    "exact": lambda s, rng: s,
    "case_punct": lambda s, rng: s.upper().rstrip(".") + " !",
    "typos": lambda s, rng: "".join(ch for i, ch in enumerate(s) if i not in (5, len(s) // 2)),
    "prefix": lambda s, rng: "Is it true that " + s[0].lower() + s[1:].rstrip(".") + "?",
    "drop_word": lambda s, rng: " ".join(w for i, w in enumerate(s.split()) if i != len(s.split()) // 2),
}
N_TRAIN = 30
PER_EDIT = 2


def _norm(t):
    return " ".join(t.lower().split())


@pytest.fixture(scope="module")
def setup(load, tmp_path_factory):
    from data_schemas import QRELS, QUERIES
    c = load("scifact")
    rng = random.Random(11)
    train_q = c.queries_for("train").to_pylist()
    test_q = c.queries_for("test").to_pylist()
    tr_qrels = c.qrels_for("train").to_pylist()
    te_qrels = c.qrels_for("test").to_pylist()
    with_qrels = sorted({r["query_id"] for r in tr_qrels})
    train_ids = set(rng.sample(with_qrels, N_TRAIN))
    sources = rng.sample([q for q in test_q if len(q["text"].split()) >= 6], PER_EDIT * len(EDITS))
    planted, planted_qrels = [], []
    for n, (kind, fn) in enumerate(EDITS.items()):
        for q in sources[PER_EDIT * n:PER_EDIT * (n + 1)]:
            pid = f"plant-{kind}-{q['query_id']}"
            planted.append({**q, "query_id": pid, "text": fn(q["text"], rng), "split": "train"})
            planted_qrels += [{**r, "query_id": pid, "split": "train"} for r in te_qrels if r["query_id"] == q["query_id"]]
    queries = QUERIES.from_records([q for q in train_q if q["query_id"] in train_ids] + test_q + planted)
    qrels = QRELS.from_records([r for r in tr_qrels if r["query_id"] in train_ids] + te_qrels + planted_qrels)
    # candidates: each train/planted query's positives plus a few random documents
    ids = c.documents.column("doc_id").to_pylist()
    cq, cd, cr = [], [], []
    for q in sorted(train_ids | {p["query_id"] for p in planted}):
        pos = [r["doc_id"] for r in tr_qrels + planted_qrels if r["query_id"] == q]
        for rank, d in enumerate(list(dict.fromkeys(rng.sample(ids, 4) + pos)), 1):
            cq.append(q), cd.append(d), cr.append(rank)
    cands = pa.table({"query_id": cq, "doc_id": cd, "rank": pa.array(cr, pa.int64())})
    return c, queries, qrels, cands, planted, test_q


def test_planted_test_claims_never_reach_retriever_examples(setup, tmp_path):
    from grouprank.queries.mine import mine_queries
    from grouprank.retriever_training.data import human_examples, normalise_examples, to_training_frame
    from grouprank.retriever_training.stage import drop_eval_overlap
    c, queries, qrels, cands, planted, test_q = setup
    cfg = RunConfig.model_validate({"work_dir": str(tmp_path), "datasets": {"negatives_per_example": 2}})
    mined, _ = mine_queries(cfg, c.documents, queries, qrels)
    dec = dict(zip(mined.column("query_id").to_pylist(), mined.column("decision").to_pylist()))
    planted_ids = {p["query_id"] for p in planted}
    assert all(dec[p] == "leakage" for p in planted_ids), {p: dec[p] for p in planted_ids if dec[p] != "leakage"}
    assert not any(q["query_id"] in dec for q in test_q)  # the eval split itself is never mined

    ex, _ = human_examples(qrels, cands, c.documents, mined, cfg.datasets)
    df = normalise_examples(ex.to_pandas())
    frame, _ = to_training_frame(df, 2, drop_short=False)
    leaked_texts = {_norm(p["text"]) for p in planted} | {_norm(q["text"]) for q in test_q}
    assert len(df) > 0
    assert not (set(df["query_id"]) & planted_ids)
    assert not ({_norm(a) for a in frame["anchor"]} & leaked_texts)
    # the stage's last safety net finds nothing left to drop against the test claims
    _, n = drop_eval_overlap(df, {q["query_id"]: q["text"] for q in test_q})
    assert n == 0

    # control: the same build on the unguarded queries lets the planted copies in
    ex_bad, _ = human_examples(qrels, cands, c.documents, queries, cfg.datasets)
    assert planted_ids <= set(ex_bad.column("query_id").to_pylist())
    # ... and the stage's safety net catches the exact / case-and-punctuation copies among them
    _, n_bad = drop_eval_overlap(normalise_examples(ex_bad.to_pandas()), {q["query_id"]: q["text"] for q in test_q})
    assert n_bad >= 2 * PER_EDIT
