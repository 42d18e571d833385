"""Prefect flow `fuse-labels`: Fuse the judges' judgments into graded labels (rank or score fusion).

Thin glue: the stage itself is `grouprank.pipeline.STAGES` -> 'fuse'; the stages it needs run
first, each skipped when its cached result is still valid (same inputs, config section and code).
"""
from __future__ import annotations

from prefect import flow

from grouprank.config import RunConfig

from flows.dag import run_stages
from flows.runners import make_task_runner

TARGETS = ('fuse',)


@flow(name='fuse-labels', task_runner=make_task_runner(), log_prints=True)
def fuse_flow(config: RunConfig = RunConfig()) -> dict:
    """Fuse the judges' judgments into graded labels (rank or score fusion).

    Earlier stages come from the cache when nothing they depend on changed."""
    return run_stages(config, TARGETS, 'fuse')
