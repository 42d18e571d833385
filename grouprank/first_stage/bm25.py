"""BM25 with bm25s (eager sparse scoring), PyStemmer stemming and bm25s' stopword lists.

`BM25Retriever.search` and `score_docs` both go through `scores(query)`, the exact BM25 score of
every document for one query (bm25s computes this vector anyway before taking its top k), so
`score_docs` costs no more than a search and agrees with it exactly.
Ties are broken by corpus position (stable), so rankings are deterministic.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from grouprank.text import top_k

PARAMS_FILE = "grouprank_bm25.json"


def _bm25s():
    import logging

    import bm25s
    # bm25s sets its own logger to DEBUG at import; keep its per-call debug lines out of our logs
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


class BM25Retriever:
    """BM25 over a corpus of (doc_id, text).

    >>> r = BM25Retriever().index(["d1", "d2"], ["cats purr", "dogs bark loudly"])
    >>> r.search(["barking dog"], k=1)
    [[('d2', ...)]]
    """

    def __init__(self, k1: float = 1.5, b: float = 0.75, method: str = "lucene",
                 stemmer: str | None = "english", stopwords: str | list[str] | None = "en"):
        self.k1, self.b, self.method = float(k1), float(b), method
        self.stemmer_name = stemmer
        self.stopwords = stopwords
        self._bm25 = None
        self._stemmer = None
        self.doc_ids: list[str] = []
        self._pos: dict[str, int] | None = None

    # --- configuration --------------------------------------------------------------------
    def params(self) -> dict:
        bm25s = _bm25s()
        return {"k1": self.k1, "b": self.b, "method": self.method, "stemmer": self.stemmer_name,
                "stopwords": self.stopwords, "bm25s": bm25s.__version__.split(".")[0:2]}

    def _get_stemmer(self):
        if self._stemmer is None and self.stemmer_name:
            import Stemmer
            self._stemmer = Stemmer.Stemmer(self.stemmer_name)
        return self._stemmer

    def _tokenize(self, texts: list[str], return_ids: bool, show_progress: bool = False):
        bm25s = _bm25s()
        return bm25s.tokenize(texts, lower=True, stopwords=self.stopwords or None, stemmer=self._get_stemmer(),
                              return_ids=return_ids, show_progress=show_progress)

    # --- indexing -------------------------------------------------------------------------
    def index(self, doc_ids: Sequence[str], texts: Sequence[str], show_progress: bool = False) -> "BM25Retriever":
        bm25s = _bm25s()
        if len(doc_ids) != len(texts):
            raise ValueError(f"{len(doc_ids)} doc ids but {len(texts)} texts")
        if len(doc_ids) == 0:
            raise ValueError("cannot index an empty corpus")
        self.doc_ids = [str(d) for d in doc_ids]
        self._pos = None
        tokens = self._tokenize(list(texts), return_ids=True, show_progress=show_progress)
        self._bm25 = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        self._bm25.index(tokens, show_progress=show_progress)
        return self

    @property
    def n_docs(self) -> int:
        return len(self.doc_ids)

    def _require(self):
        if self._bm25 is None:
            raise RuntimeError("BM25Retriever has no index: call index() or load() first")
        return self._bm25

    def doc_position(self, doc_id: str) -> int | None:
        if self._pos is None:
            self._pos = {d: i for i, d in enumerate(self.doc_ids)}
        return self._pos.get(doc_id)

    # --- scoring --------------------------------------------------------------------------
    def query_token_ids(self, queries: Sequence[str]) -> list[list[int]]:
        bm = self._require()
        toks = self._tokenize(list(queries), return_ids=False)
        vocab = bm.vocab_dict
        return [[vocab[t] for t in q if t in vocab] for q in toks]

    def scores_from_token_ids(self, ids: list[int]) -> np.ndarray:
        """Exact BM25 score of every document for one query given as vocabulary ids
        (`query_token_ids`); all zeros for an empty query."""
        return self._scores_from_ids(ids)

    def _scores_from_ids(self, ids: list[int]) -> np.ndarray:
        bm = self._require()
        if not ids:
            return np.zeros(self.n_docs, dtype=np.float32)
        return bm.get_scores_from_ids(ids)

    def scores(self, query: str) -> np.ndarray:
        """Exact BM25 score of every document (corpus order) for one query."""
        return self._scores_from_ids(self.query_token_ids([query])[0])

    def iter_scores(self, queries: Sequence[str]) -> Iterable[np.ndarray]:
        for ids in self.query_token_ids(queries):
            yield self._scores_from_ids(ids)

    def search_positions(self, queries: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query: (corpus positions, scores) of the top k, descending. A query with no
        indexed term (e.g. only stopwords) returns nothing rather than k arbitrary zero scores."""
        out = []
        for s in self.iter_scores(queries):
            idx, val = top_k(s, k)
            keep = val > 0
            out.append((idx[keep], val[keep]))
        return out

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[tuple[str, float]]]:
        return [[(self.doc_ids[i], float(v)) for i, v in zip(idx, val)]
                for idx, val in self.search_positions(queries, k)]

    def score_docs(self, query: str, doc_ids: Sequence[str]) -> np.ndarray:
        """BM25 score of the given documents for `query` (float32, 0.0 for ids not in the corpus)."""
        s = self.scores(query)
        out = np.zeros(len(doc_ids), dtype=np.float32)
        for j, d in enumerate(doc_ids):
            p = self.doc_position(str(d))
            if p is not None:
                out[j] = s[p]
        return out

    # --- persistence ----------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        bm = self._require()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        bm.save(str(d), show_progress=False)
        (d / "doc_ids.json").write_text(json.dumps(self.doc_ids))
        (d / PARAMS_FILE).write_text(json.dumps({k: v for k, v in self.params().items() if k != "bm25s"}))
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike, mmap: bool = False) -> "BM25Retriever":
        bm25s = _bm25s()
        d = Path(directory)
        p = json.loads((d / PARAMS_FILE).read_text())
        r = cls(k1=p["k1"], b=p["b"], method=p["method"], stemmer=p["stemmer"], stopwords=p["stopwords"])
        r._bm25 = bm25s.BM25.load(str(d), mmap=mmap)
        r.doc_ids = json.loads((d / "doc_ids.json").read_text())
        return r
