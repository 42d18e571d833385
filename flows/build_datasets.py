"""Prefect flow `build-datasets`: Build the reranker (groupwise RL/SFT) and retriever training sets from the labels.

Thin glue over `grouprank.pipeline.STAGES` (see `flows.dag.stage_flow`).
"""
from flows.dag import stage_flow

TARGETS = ('build_datasets',)

build_datasets_flow = stage_flow('build-datasets', TARGETS, 'Build the reranker (groupwise RL/SFT) and retriever training sets from the labels.', __name__)
