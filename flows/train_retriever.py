"""Prefect flow `train-retriever`: Fine-tune the dense retriever contrastively on the synthesized examples.

Thin glue over `grouprank.pipeline.STAGES` (see `flows.dag.stage_flow`).
"""
from flows.dag import stage_flow

TARGETS = ('train_retriever',)

train_retriever_flow = stage_flow('train-retriever', TARGETS, 'Fine-tune the dense retriever contrastively on the synthesized examples.', __name__)
