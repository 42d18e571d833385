"""Prefect flow `mine-queries`: Mine (and optionally generate) training queries from the collection.

Thin glue: the stage itself is `grouprank.pipeline.STAGES` -> 'mine_queries'; the stages it needs run
first, each skipped when its cached result is still valid (same inputs, config section and code).
"""
from __future__ import annotations

from prefect import flow

from grouprank.config import RunConfig

from flows.dag import run_stages
from flows.runners import make_task_runner

TARGETS = ('mine_queries',)


@flow(name='mine-queries', task_runner=make_task_runner(), log_prints=True)
def mine_queries_flow(config: RunConfig = RunConfig()) -> dict:
    """Mine (and optionally generate) training queries from the collection.

    Earlier stages come from the cache when nothing they depend on changed."""
    return run_stages(config, TARGETS, 'mine_queries')
