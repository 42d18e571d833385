"""Prefect flow `export`: Export the datasets (Parquet shards, BEIR, TREC qrels, dataset card, grade histogram).

Thin glue: the stage itself is `grouprank.pipeline.STAGES` -> 'export'; the stages it needs run
first, each skipped when its cached result is still valid (same inputs, config section and code).
"""
from __future__ import annotations

from prefect import flow

from grouprank.config import RunConfig

from flows.dag import run_stages
from flows.runners import make_task_runner

TARGETS = ('export',)


@flow(name='export', task_runner=make_task_runner(), log_prints=True)
def export_flow(config: RunConfig = RunConfig()) -> dict:
    """Export the datasets (Parquet shards, BEIR, TREC qrels, dataset card, grade histogram).

    Earlier stages come from the cache when nothing they depend on changed."""
    return run_stages(config, TARGETS, 'export')
