"""Configuration of the `evaluate` stage."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from grouprank.config_section import Section


class EvaluationConfig(Section):
    """The `evaluate` stage (grouprank.evaluation.stage): first-stage retrieval, the fine-tuned
    retriever and reranking, scored on a judged query split with ir-measures."""
    split: str = Field("auto", description="query split evaluated (queries with qrels in this split); auto: "
                       "test when the collection has one, else all judged queries")
    measures: list[str] = Field(default_factory=lambda: ["nDCG@10", "R@100", "RR@10"])
    exclude_training_queries: bool = Field(True, description="drop evaluation queries whose id or "
                                           "normalised text is among the mined training queries")
    finetuned_retriever: bool = Field(True, description="also score the train_retriever model, alone and "
                                      "fused with BM25 (encodes the corpus once more with it)")
    rerank: Literal["auto", "trained", "off"] = Field("auto", description="auto: rerank the hybrid run with the "
                                                      "train_reranker stage's policy, and with rerank.mode when "
                                                      "an LLM endpoint is configured (rerank.backend llm) or "
                                                      "rerank.model_path is set (backend transformers); trained: "
                                                      "the trained policy only; off: never")
    rerank_max_queries: int | None = Field(None, ge=1, description="rerank only the first N evaluation queries")
