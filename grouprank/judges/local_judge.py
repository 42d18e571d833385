"""The local judge (kind "local"): JUDGMENTS rows from a `LocalScorer`, no LLM and no request.

Each row's score is the scorer's calibrated 0–10 score; its rationale lists the raw features
("not an LLM: minilm=…, bm25=…"); its request hash is a content hash of (model id, calibration
fingerprint, query, document text). A scorer error on a query fails that query's rows with the
reason; no row is dropped.
"""
from __future__ import annotations

import logging
from typing import Callable

from .base import JudgeInfo, JudgePool, RowBuilder, local_hash
from .local_scorer import LocalScorer

log = logging.getLogger(__name__)


class LocalJudge:
    """kind "local": scores every pair of the pools with a LocalScorer; no LLM, no request."""

    kind = "local"

    def __init__(self, spec, scorer: LocalScorer, *, progress: Callable[[int, int], None] | None = None):
        self.spec = spec
        self.scorer = scorer
        self.progress = progress

    def info(self) -> JudgeInfo:
        return JudgeInfo(self.spec.id, "local", self.scorer.model_id, self.scorer.template_version)

    def plan(self, pool: JudgePool) -> list:
        return []

    def run(self, pool: JudgePool) -> list[dict]:
        from grouprank.progress import Progress
        rb = RowBuilder(self.info(), pool)
        all_ids = [d for lst in pool.pools.values() for d in lst]
        self.scorer.precompute(all_ids, progress=True)
        self.scorer.precompute_queries([pool.queries[q] for q in pool.pools])
        wr = self.scorer.window_report(all_ids)
        for name in ("minilm", "mpnet"):
            if wr.get(f"{name}_over_window"):
                log.warning("local judge: %d of %d pool documents exceed %s's window of %d tokens: its feature "
                            "sees only their beginning (BM25 sees the whole text)", wr[f"{name}_over_window"],
                            wr["documents"], name, wr[f"{name}_window_tokens"])
        done, total = 0, pool.n_pairs
        prog = Progress(f"judge {self.spec.id} (local)", total, unit="pairs")
        cal = self.scorer.calibration.fingerprint()
        for qid, dids in pool.pools.items():
            q = pool.queries[qid]
            try:
                X = self.scorer.features_for_ids(q, dids)
                S = self.scorer.calibration.score(X)
                err = None
            except Exception as e:  # noqa: BLE001 - recorded per pair, never dropped
                log.exception("local judge failed on query %s", qid)
                X, S, err = None, None, f"local scorer error: {type(e).__name__}: {e}"
            for j, d in enumerate(dids):
                h = local_hash(self.scorer.model_id, cal, q, pool.docs[d])
                if err is None:
                    feats = ", ".join(f"{f}={X[j, k]:.3f}" for k, f in enumerate(self.scorer.features))
                    rb.add(qid, d, score=round(float(S[j]), 4), rationale=f"not an LLM: {feats}",
                           request_hash=h, status="ok")
                else:
                    rb.add(qid, d, request_hash=h, status="failed", error=err)
            done += len(dids)
            prog.update(len(dids))
            if self.progress:
                self.progress(done, total)
        prog.close()
        return rb.rows
