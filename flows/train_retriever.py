"""Prefect flow `train-retriever`: Fine-tune the dense retriever contrastively on the synthesized examples.

Thin glue: the stage itself is `grouprank.pipeline.STAGES` -> 'train_retriever'; the stages it needs run
first, each skipped when its cached result is still valid (same inputs, config section and code).
"""
from __future__ import annotations

from prefect import flow

from grouprank.config import RunConfig

from flows.dag import run_stages
from flows.runners import make_task_runner

TARGETS = ('train_retriever',)


@flow(name='train-retriever', task_runner=make_task_runner(), log_prints=True)
def train_retriever_flow(config: RunConfig = RunConfig()) -> dict:
    """Fine-tune the dense retriever contrastively on the synthesized examples.

    Earlier stages come from the cache when nothing they depend on changed."""
    return run_stages(config, TARGETS, 'train_retriever')
