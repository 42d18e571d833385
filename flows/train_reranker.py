"""Prefect flow `train-reranker`: Train the groupwise reranker (SFT warm start, then GRPO).

Thin glue: the stage itself is `grouprank.pipeline.STAGES` -> 'train_reranker'; the stages it needs run
first, each skipped when its cached result is still valid (same inputs, config section and code).
"""
from __future__ import annotations

from prefect import flow

from grouprank.config import RunConfig

from flows.dag import run_stages
from flows.runners import make_task_runner

TARGETS = ('train_reranker',)


@flow(name='train-reranker', task_runner=make_task_runner(), log_prints=True)
def train_reranker_flow(config: RunConfig = RunConfig()) -> dict:
    """Train the groupwise reranker (SFT warm start, then GRPO).

    Earlier stages come from the cache when nothing they depend on changed."""
    return run_stages(config, TARGETS, 'train_reranker')
