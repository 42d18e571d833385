"""Prefect flow `evaluate`: Evaluate the trained retriever and reranker (nDCG@10, recall) on the collection.

Thin glue: the stage itself is `grouprank.pipeline.STAGES` -> 'evaluate'; the stages it needs run
first, each skipped when its cached result is still valid (same inputs, config section and code).
"""
from __future__ import annotations

from prefect import flow

from grouprank.config import RunConfig

from flows.dag import run_stages
from flows.runners import make_task_runner

TARGETS = ('evaluate',)


@flow(name='evaluate', task_runner=make_task_runner(), log_prints=True)
def evaluate_flow(config: RunConfig = RunConfig()) -> dict:
    """Evaluate the trained retriever and reranker (nDCG@10, recall) on the collection.

    Earlier stages come from the cache when nothing they depend on changed."""
    return run_stages(config, TARGETS, 'evaluate')
