"""Prefect flow `judge`: Judge the candidate pools with the configured judges (LLM or local) and fuse the

Thin glue: the stage itself is `grouprank.pipeline.STAGES` -> 'judge'; the stages it needs run
first, each skipped when its cached result is still valid (same inputs, config section and code).
"""
from __future__ import annotations

from prefect import flow

from grouprank.config import RunConfig

from flows.dag import run_stages
from flows.runners import make_task_runner

TARGETS = ('judge', 'fuse')


@flow(name='judge', task_runner=make_task_runner(), log_prints=True)
def judge_flow(config: RunConfig = RunConfig()) -> dict:
    """Judge the candidate pools with the configured judges (LLM or local) and fuse the
    judgments into graded labels. The judge-only deployment runs this flow.

    Earlier stages come from the cache when nothing they depend on changed."""
    return run_stages(config, TARGETS, 'judge')
