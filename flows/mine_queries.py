"""Prefect flow `mine-queries`: Mine (and optionally generate) training queries from the collection.

Thin glue over `grouprank.pipeline.STAGES` (see `flows.dag.stage_flow`).
"""
from flows.dag import stage_flow

TARGETS = ('mine_queries',)

mine_queries_flow = stage_flow('mine-queries', TARGETS, 'Mine (and optionally generate) training queries from the collection.', __name__)
