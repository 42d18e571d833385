"""Prefect flow `retrieve`: Retrieve candidate pools (BM25 + dense, fused, pooled) for the mined queries.

Thin glue: the stage itself is `grouprank.pipeline.STAGES` -> 'retrieve'; the stages it needs run
first, each skipped when its cached result is still valid (same inputs, config section and code).
"""
from __future__ import annotations

from prefect import flow

from grouprank.config import RunConfig

from flows.dag import run_stages
from flows.runners import make_task_runner

TARGETS = ('retrieve',)


@flow(name='retrieve', task_runner=make_task_runner(), log_prints=True)
def retrieve_flow(config: RunConfig = RunConfig()) -> dict:
    """Retrieve candidate pools (BM25 + dense, fused, pooled) for the mined queries.

    Earlier stages come from the cache when nothing they depend on changed."""
    return run_stages(config, TARGETS, 'retrieve')
