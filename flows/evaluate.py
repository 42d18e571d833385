"""Prefect flow `evaluate`: Evaluate first-stage retrieval, the fine-tuned retriever and reranking (nDCG@10, R@100, RR@10)
on the collection's judged evaluation split.

Thin glue over `grouprank.pipeline.STAGES` (see `flows.dag.stage_flow`).
"""
from flows.dag import stage_flow

TARGETS = ('evaluate',)

evaluate_flow = stage_flow('evaluate', TARGETS, 'Evaluate first-stage retrieval, the fine-tuned retriever and reranking (nDCG@10, R@100, RR@10) on the judged evaluation split.', __name__)
