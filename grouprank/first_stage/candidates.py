"""What retrieval hands on: one query's candidate set (`QueryCandidates`, the union of both
retrievers' top lists with both scores) and the fused ranking of every query with the candidate
sets it came from (`RetrievalResult`, so another fusion needs no second retrieval)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

@dataclass
class QueryCandidates:
    """One query's candidate set U (union of both top-depth lists), aligned arrays."""
    positions: np.ndarray   # corpus positions, int64
    bm25: np.ndarray        # float64, NaN = no score (only without union rescoring)
    dense: np.ndarray
    bm25_rank: np.ndarray   # int64, rank in BM25's own top-depth list, 0 = not in it
    dense_rank: np.ndarray



@dataclass
class RetrievalResult:
    """The fused top-`depth` ranking per query (`ranking`, RANKING columns: query_id,
    doc_id, rank, fused_score, bm25_score, bm25_rank, dense_score, dense_rank, fusion), plus the
    candidate sets it came from, so other fusions can be computed without retrieving again."""
    ranking: pa.Table
    fusion: str
    query_ids: list[str]
    candidates: list[QueryCandidates] = field(repr=False)
    retriever: Any = field(repr=False)  # the `hybrid.HybridRetriever` that retrieved them
    timings: dict[str, float] = field(default_factory=dict)
    reused: dict[str, bool] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    excluded_removed: int = 0  # candidates removed as excluded ids (BRIGHT)
    long_texts: dict[str, Any] = field(default_factory=dict)  # texts longer than the encoder's window

    def with_fusion(self, fusion: str, **overrides: Any) -> "RetrievalResult":
        """The same candidates fused differently, e.g. with_fusion("rrf") or with_fusion("minmax", bm25_weight=0.3)."""
        r = self.retriever
        cfg = r.cfg.model_copy(update=overrides) if overrides else r.cfg
        table = r.ranking_table(self.query_ids, self.candidates, fusion, cfg=cfg)
        return replace(self, ranking=table, fusion=fusion)

    def run(self, system: str | None = None):
        """pandas DataFrame (query_id, doc_id, score) for evaluation: `system` None = this fusion,
        or 'bm25' / 'dense' for a single retriever's own top-depth list."""
        import pandas as pd
        if system in (None, self.fusion):
            t = self.ranking
            return pd.DataFrame({"query_id": t["query_id"].to_pylist(), "doc_id": t["doc_id"].to_pylist(),
                                 "score": t["fused_score"].to_numpy()})
        if system not in ("bm25", "dense", "minmax", "rrf"):
            raise ValueError(f"unknown system {system!r}")
        if system in ("minmax", "rrf"):
            return self.with_fusion(system).run()
        q, d, s = [], [], []
        for qid, c in zip(self.query_ids, self.candidates):
            rk = c.bm25_rank if system == "bm25" else c.dense_rank
            sc = c.bm25 if system == "bm25" else c.dense
            sel = np.flatnonzero(rk > 0)
            sel = sel[np.argsort(rk[sel])]
            q.extend([qid] * sel.shape[0])
            d.extend(self.retriever.doc_ids[int(p)] for p in c.positions[sel])
            s.extend(sc[sel].tolist())
        return pd.DataFrame({"query_id": q, "doc_id": d, "score": s})


def drop_excluded(query_ids: Sequence[str], cands: list[QueryCandidates], doc_ids: Sequence[str],
                  excluded: Mapping[str, Iterable[str]] | None) -> int:
    """Remove each query's excluded documents (BRIGHT's `excluded_ids`) from its candidate set, in
    place, before fusion: they appear in no run (fused, BM25, dense) and in no pool. Returns how
    many candidates were removed."""
    if not excluded:
        return 0
    pos: dict[str, int] | None = None
    removed = 0
    for i, (qid, c) in enumerate(zip(query_ids, cands)):
        ex = excluded.get(str(qid))
        if not ex:
            continue
        if pos is None:
            pos = {d: j for j, d in enumerate(doc_ids)}
        bad = np.asarray(sorted(pos[d] for d in ex if d in pos), dtype=np.int64)
        keep = ~np.isin(c.positions, bad)
        removed += int((~keep).sum())
        cands[i] = QueryCandidates(c.positions[keep], c.bm25[keep], c.dense[keep], c.bm25_rank[keep],
                                   c.dense_rank[keep])
    return removed
