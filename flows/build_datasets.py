"""Prefect flow `build-datasets`: Build the reranker (groupwise RL/SFT) and retriever training sets from the labels.

Thin glue: the stage itself is `grouprank.pipeline.STAGES` -> 'build_datasets'; the stages it needs run
first, each skipped when its cached result is still valid (same inputs, config section and code).
"""
from __future__ import annotations

from prefect import flow

from grouprank.config import RunConfig

from flows.dag import run_stages
from flows.runners import make_task_runner

TARGETS = ('build_datasets',)


@flow(name='build-datasets', task_runner=make_task_runner(), log_prints=True)
def build_datasets_flow(config: RunConfig = RunConfig()) -> dict:
    """Build the reranker (groupwise RL/SFT) and retriever training sets from the labels.

    Earlier stages come from the cache when nothing they depend on changed."""
    return run_stages(config, TARGETS, 'build_datasets')
