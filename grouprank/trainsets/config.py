"""Configuration of the `build_datasets` and `export` stages."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from grouprank.config_section import Section


class DatasetsConfig(Section):
    """Training datasets and exports (grouprank.trainsets; see its package docstring)."""
    # --- groupwise reranker examples (multi-scale sampling, GroupRank)
    group_min: int = Field(5, ge=1, description="smallest group (paper: 5)")
    group_max: int = Field(20, ge=1, description="largest group (paper: 20)")
    group_size_weights: dict[int, float] | None = Field(
        None, description="relative weight per group size (e.g. {5: 1, 10: 2, 20: 1}); None = uniform "
        "over group_min..group_max")
    groups_per_query: int = Field(3, ge=1, description="groups sampled per query")
    top_share: float = Field(0.5, ge=0.0, le=1.0, description="share of each group drawn from the top of "
                             "the fused ranking; the rest is drawn from the whole remaining ranking")
    top_window: int = Field(10, ge=1, description="'top' = the first max(top_window, n_top) fused ranks")
    require_mixed: bool = Field(True, description="when a query has both, every group holds at least one "
                                "document with grade > 0 and one with grade 0")
    sft_source: Literal["auto", "teacher", "fused"] = Field(
        "auto", description="SFT targets: teacher = groupwise judge outputs (rationale + scores); fused = "
        "targets derived from fused grades with a templated rationale; auto = teacher when groupwise "
        "judgments exist, else fused")
    # --- retriever examples
    positive_grade: int = Field(2, description="grade >= this is a positive")
    positive_fallback_grade: int | None = Field(None, ge=0, description="a query with no positive takes its "
                                                "best-fused document as its positive when that has at least "
                                                "this grade (None: the query gets no example)")
    negatives_per_example: int = Field(1, ge=0, description="hard negatives per example: the build keeps "
                                       "this many, the export's retriever/ view has exactly this many columns, "
                                       "and it equals the retriever training's default n_negatives (1), so the "
                                       "exported view reproduces what the run trained with")
    human_guard: bool = Field(True, description="where a mined query carries human qrels (the collection's "
                              "qrels for the same query id), no document humans cite for it becomes a hard "
                              "negative; the disagreement with the synthetic grades is reported. Off: the data "
                              "uses no human label at all (the e2e bench's synthetic arm)")
    negative_max_grade: int = Field(0, description="a hard negative has grade <= this")
    negative_min_rank: int = Field(1, ge=1, description="hard negatives come from this retrieval rank on (1: the "
                                   "top): the highest ranks hold the judges' false negatives")
    false_negative_margin: float = Field(0.05, ge=0.0, description="drop a negative whose per-query "
                                         "min-max normalised fused score is >= the positive's minus this")
    max_positives_per_query: int | None = Field(None, ge=1, description="cap on positives (examples) per query")
    # --- prompt injection (grouprank.judges.injection)
    exclude_injection_flagged: bool = Field(True, description="leave out of every training view (reranker "
                                            "RL/SFT groups, retriever positives and negatives) each (query, "
                                            "document) pair that any judge row flagged as carrying text aimed "
                                            "at the judge (JUDGMENTS.injection_flag); the count is "
                                            "`injection_flagged_excluded` in the build stats. Needs the "
                                            "judgments table; off: flagged pairs are kept")
    # --- export
    card_license: str | None = Field(None, description="the dataset card's `license` (a Hub licence id, e.g. "
                                     "cc-by-4.0); None: the source collection's (built-in collections: from their "
                                     "SOURCE.md), else unknown")
    card_language: list[str] = Field(["en"], description="the dataset card's `language` (ISO 639-1 codes)")
    shard_max_rows: int = Field(50_000, ge=1, description="rows per Parquet shard at most")
    shard_max_bytes: int = Field(256 * 2**20, ge=1, description="approximate uncompressed bytes per shard at most")
