"""BM25 top-k candidates for a collection's queries as a CANDIDATES table, the way the retrieve stage
would pool them (top 10 "top", the rest "sampled"): a fast stand-in input for dataset-building tests.
The BM25 index of a collection is built once per process."""
from __future__ import annotations

from data_schemas import CANDIDATES

_INDEXES: dict[str, object] = {}  # collection name -> BM25 index


def _index(c):
    if c.name not in _INDEXES:
        from grouprank.first_stage.bm25 import BM25Retriever
        _INDEXES[c.name] = BM25Retriever().index(c.documents["doc_id"].to_pylist(), c.documents["text"].to_pylist())
    return _INDEXES[c.name]


def bm25_candidates(collection, query_ids: list[str], k: int = 100) -> tuple[list[dict], object]:
    """(rows, CANDIDATES table) of BM25's top `k` for `query_ids`."""
    c = collection
    qtext = dict(zip(c.queries["query_id"].to_pylist(), c.queries["text"].to_pylist()))
    rows = []
    for q, hits in zip(query_ids, _index(c).search([qtext[q] for q in query_ids], k=k)):
        for i, (d, s) in enumerate(hits, 1):
            rows.append({"query_id": q, "doc_id": d, "rank": i, "fused_score": float(s), "bm25_score": float(s),
                         "bm25_rank": i, "dense_score": None, "dense_rank": None, "fusion": "bm25",
                         "pool": "top" if i <= 10 else "sampled"})
    return rows, CANDIDATES.from_records(rows)


def dl19_training_inputs(collection, n_queries: int):
    """(documents, queries, candidates, labels) for the first `n_queries` judged DL19 queries:
    candidates = BM25 top 100, labels = the human qrels over them (the dataset builders' inputs)."""
    from grouprank.trainsets.human import labels_from_qrels
    qids = sorted(set(collection.qrels["query_id"].to_pylist()))[:n_queries]
    _, cand = bm25_candidates(collection, qids)
    labels = labels_from_qrels(collection.qrels, cand, query_ids=qids)
    return collection.documents, collection.queries, cand, labels
