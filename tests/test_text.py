"""grouprank.text: one document text, one query normal form, exact top-k; and the stages that must
see the same document text (candidate retrieval, retriever evaluation, the dataset builders)."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from grouprank.text import document_text, document_text_map, document_texts, normalize_query, top_k, top_k_rows

# --------------------------------------------------------------------------- document text


@pytest.mark.parametrize("title, text, want", [
    ("Wing flow", "at mach 2", "Wing flow at mach 2"),                       # one space between
    ("  Wing flow \t", "at mach 2", "Wing flow at mach 2"),                  # title stripped
    (None, "no title", "no title"),
    ("", "no title", "no title"),
    ("   ", "no title", "no title"),
    # the text already starts with its title (Cranfield): not doubled, case-insensitive, text kept as is
    ("Boundary Layers", "boundary layers in hypersonic flow", "boundary layers in hypersonic flow"),
    ("Boundary layers", "  Boundary layers again", "  Boundary layers again"),
    # the title elsewhere in the text, or only a prefix of the text's first word, is still added
    ("flow", "the flow at mach 2", "flow the flow at mach 2"),
])
def test_document_text_conventions(title, text, want):
    assert document_text(title, text) == want


def test_document_text_without_title():
    assert document_text("Wing flow", "at mach 2", include_title=False) == "at mach 2"
    assert document_text("Wing flow", None, include_title=False) == ""
    assert document_text(None, None) == ""


DOCS = pa.table({
    "doc_id": ["d1", "d2", "d3", "d4", "d5", "d6"],
    "title": ["Wing flow", "Boundary layers", None, "  Heat transfer ", "Panel flutter", "Shock waves"],
    "text": ["at mach 2", "boundary layers in hypersonic flow", "no title here", "by radiation",
             "of thin plates", "in nozzles"],
    "collection": ["t"] * 6,
})
WANT = ["Wing flow at mach 2", "boundary layers in hypersonic flow", "no title here",
        "Heat transfer by radiation", "Panel flutter of thin plates", "Shock waves in nozzles"]
RAW = DOCS["text"].to_pylist()


def test_document_texts_and_map():
    assert document_texts(DOCS) == (["d1", "d2", "d3", "d4", "d5", "d6"], WANT)
    assert document_texts(DOCS, include_title=False)[1] == RAW
    assert document_texts(DOCS.drop(["title"])) == (DOCS["doc_id"].to_pylist(), RAW)
    # ids become strings, table order is kept
    t = pa.table({"doc_id": [30, 4], "title": ["B", None], "text": ["x", "y"]})
    assert document_texts(t) == (["30", "4"], ["B x", "y"])
    assert document_text_map(DOCS, ["d4", "d2", "nope"]) == {"d4": WANT[3], "d2": WANT[1]}
    assert document_text_map(t, [30]) == {"30": "B x"}
    assert document_text_map(DOCS, include_title=False) == dict(zip(DOCS["doc_id"].to_pylist(), RAW))
    assert document_text_map(DOCS, []) == {}


# --------------------------------------------------------------------------- one text through every stage

def _judged_inputs():
    """One query; d1, d2 judged relevant (grade 2), d3..d6 judged not relevant; candidates in
    the order d3 d4 d5 d6 d1 d2."""
    from data_schemas import CANDIDATES, QRELS, QUERIES
    from grouprank.collections.base import existing_query, qrel
    from grouprank.trainsets.human import labels_from_qrels
    queries = QUERIES.from_records([existing_query("q1", "hypersonic boundary layers", "t", "train")])
    grades = {"d1": 2, "d2": 2, "d3": 0, "d4": 0, "d5": 0, "d6": 0}
    qrels = QRELS.from_records([qrel("q1", d, g, g, "train") for d, g in grades.items()])
    order = ["d3", "d4", "d5", "d6", "d1", "d2"]
    cand = CANDIDATES.from_records([
        {"query_id": "q1", "doc_id": d, "rank": i, "fused_score": 10.0 - i, "bm25_score": 10.0 - i, "bm25_rank": i,
         "dense_score": None, "dense_rank": None, "fusion": "bm25", "pool": "top"} for i, d in enumerate(order, 1)])
    return queries, qrels, cand, labels_from_qrels(qrels, cand)


def _check_examples(ret: pa.Table):
    text = dict(zip(DOCS["doc_id"].to_pylist(), WANT))
    rows = ret.to_pylist()
    assert sorted(r["positive_doc_id"] for r in rows) == ["d1", "d2"]
    for r in rows:
        assert r["positive"] == text[r["positive_doc_id"]]
        assert r["negative_doc_ids"] and r["negatives"] == [text[d] for d in r["negative_doc_ids"]]


def test_dataset_builders_use_the_document_text():
    from grouprank.config import DatasetsConfig
    from grouprank.trainsets.stage import build_datasets
    queries, _, cand, labels = _judged_inputs()
    _, _, ret, _ = build_datasets(DatasetsConfig(), documents=DOCS, queries=queries, labels=labels, candidates=cand)
    _check_examples(ret)


def test_human_reference_examples_use_the_document_text():
    from grouprank.config import DatasetsConfig
    from grouprank.retriever_training.data import human_examples
    queries, qrels, cand, _ = _judged_inputs()
    ret, _ = human_examples(qrels, cand, DOCS, queries, DatasetsConfig(), positive_grade=2)
    _check_examples(ret)


def test_retriever_evaluation_and_candidate_retrieval_index_the_document_text(tmp_path):
    from grouprank.config import RetrievalConfig
    from grouprank.first_stage.hybrid import HybridRetriever
    from grouprank.retriever_training.evaluate import DenseEvaluator
    from tests.support.hash_encoder import HashEncoder
    no_qrels = pd.DataFrame({"query_id": [], "doc_id": [], "grade": []})
    assert DenseEvaluator(DOCS, {}, no_qrels).texts == WANT
    assert DenseEvaluator(DOCS.to_pandas(), {}, no_qrels, include_title=False).texts == RAW
    r = HybridRetriever(DOCS, RetrievalConfig(shard_size=4), tmp_path, encoder=HashEncoder())
    assert r.doc_ids == DOCS["doc_id"].to_pylist() and r.texts == WANT


# --------------------------------------------------------------------------- query normal form

@pytest.mark.parametrize("raw, want", [
    ("  Ｈello,  WORLD! — “quoted”\tText ", "hello world quoted text"),  # NFKC width, punctuation, spaces
    ("ﬁne", "fine"),                                                       # NFKC ligature
    ("x² ①", "x2 1"),                                                      # NFKC compatibility digits
    ("Straße", "strasse"),                                                 # casefold, not lower()
    ("ΣΊΣΥΦΟΣ", "σίσυφοσ"),                                               # casefold: every sigma the same
    ("don't e-mail (now)", "don t e mail now"),                            # P* -> space
    ("50% of #1", "50 of 1"),                                              # % and # are punctuation
    ("up to $5 billion", "up to $5 billion"),                              # symbols are kept
    ("C++ < D°", "c++ < d°"),
    ("!!! ... ", ""),
    ("", ""),
    (None, ""),
])
def test_normalize_query(raw, want):
    assert normalize_query(raw) == want
    assert normalize_query(want) == want  # idempotent


def test_normalize_query_equates_only_surface_variants():
    assert normalize_query("Obesity decreases life quality.") == normalize_query("obesity  DECREASES life-quality")
    assert normalize_query("up to $5 billion") != normalize_query("up to 5 billion")
    assert normalize_query("X increases Y") != normalize_query("X decreases Y")


# --------------------------------------------------------------------------- top-k

def _ref(s: np.ndarray, k: int) -> list[int]:
    """Descending score, ties by ascending index (a full stable sort)."""
    return list(np.lexsort((np.arange(s.shape[0]), -s))[:k])


def test_top_k_ties_by_ascending_index():
    s = np.array([1.0, 3.0, 3.0, 2.0, 3.0, 0.0])
    idx, val = top_k(s, 3)
    assert idx.tolist() == [1, 2, 4] and val.tolist() == [3.0, 3.0, 3.0]
    assert top_k(s, 4)[0].tolist() == [1, 2, 4, 3]
    assert top_k(s, 2)[0].tolist() == [1, 2]                 # a tie at the cut keeps the lowest indices
    idx, val = top_k(s, 10)                                  # k > n: everything, ordered
    assert idx.tolist() == [1, 2, 4, 3, 0, 5] and val.tolist() == [3.0, 3.0, 3.0, 2.0, 1.0, 0.0]
    s = np.array([2.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0])
    assert top_k(s, 3)[0].tolist() == [0, 1, 2] and top_k(s, 5)[0].tolist() == [0, 1, 2, 3, 4]


def test_top_k_matches_a_stable_sort_with_many_ties():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 80))
        x = rng.integers(0, 4, size=n).astype(np.float32)
        for k in (1, n // 3, n - 1, n):
            idx, val = top_k(x, k)
            assert idx.tolist() == _ref(x, k)
            assert idx.dtype == np.int64 and val.dtype == np.float32 and np.array_equal(val, x[idx])


def test_top_k_empty_and_degenerate():
    s = np.array([0.5, 0.25], dtype=np.float32)
    for k in (0, -3):
        idx, val = top_k(s, k)
        assert idx.shape == val.shape == (0,) and idx.dtype == np.int64 and val.dtype == np.float32
    idx, val = top_k(np.array([], dtype=np.float64), 5)
    assert idx.shape == (0,) and val.shape == (0,)
    idx, val = top_k(np.array([-np.inf, 1.0, -np.inf]), 3)
    assert idx.tolist() == [1, 0, 2] and val[0] == 1.0


def test_top_k_rows_order_values_and_ties_inside_the_top():
    S = np.array([[5.0, 1.0, 5.0, 0.0, 5.0],
                  [0.0, 0.0, 0.0, 0.0, 0.0],
                  [1.0, 2.0, 3.0, 4.0, 5.0]], dtype=np.float32)
    idx, val = top_k_rows(S, 3)
    assert idx.tolist() == [[0, 2, 4], [0, 1, 2], [4, 3, 2]]
    assert val.tolist() == [[5.0, 5.0, 5.0], [0.0, 0.0, 0.0], [5.0, 4.0, 3.0]]
    assert idx.dtype == np.int64 and val.dtype == np.float32
    idx, val = top_k_rows(S, 9)                              # k > n: full rows, ordered
    assert idx.shape == (3, 5)
    assert idx.tolist() == [[0, 2, 4, 1, 3], [0, 1, 2, 3, 4], [4, 3, 2, 1, 0]]
    assert np.array_equal(val, np.take_along_axis(S, idx, axis=1))


def test_top_k_rows_matches_the_one_dimensional_top_k_without_ties():
    rng = np.random.default_rng(1)
    S = rng.normal(size=(9, 40))
    for k in (1, 7, 39, 40):
        idx, val = top_k_rows(S, k)
        for r in range(S.shape[0]):
            i1, v1 = top_k(S[r], k)
            assert idx[r].tolist() == i1.tolist() and val[r].tolist() == v1.tolist()


def test_top_k_rows_empty_and_degenerate():
    S = np.ones((2, 3), dtype=np.float32)
    idx, val = top_k_rows(S, 0)
    assert idx.shape == val.shape == (2, 0) and idx.dtype == np.int64 and val.dtype == np.float32
    idx, val = top_k_rows(np.zeros((0, 4)), 2)
    assert idx.shape == val.shape == (0, 2)
    idx, val = top_k_rows(np.zeros((3, 0)), 2)
    assert idx.shape == val.shape == (3, 0)


def test_top_k_rows_tie_at_the_cut_keeps_the_lowest_indices():
    rng = np.random.default_rng(0)
    S = rng.integers(0, 3, size=(20, 30)).astype(np.float32)
    idx, _ = top_k_rows(S, 10)
    assert idx.tolist() == [_ref(S[r], 10) for r in range(S.shape[0])]
