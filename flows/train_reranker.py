"""Prefect flow `train-reranker`: Train the groupwise reranker (SFT warm start, then GRPO).

Thin glue over `grouprank.pipeline.STAGES` (see `flows.dag.stage_flow`).
"""
from flows.dag import stage_flow

TARGETS = ('train_reranker',)

train_reranker_flow = stage_flow('train-reranker', TARGETS, 'Train the groupwise reranker (SFT warm start, then GRPO).', __name__)
