"""Prefect flow `export`: Export the datasets (Parquet shards, BEIR, TREC qrels, dataset card, grade histogram).

Thin glue over `grouprank.pipeline.STAGES` (see `flows.dag.stage_flow`).
"""
from flows.dag import stage_flow

TARGETS = ('export',)

export_flow = stage_flow('export', TARGETS, 'Export the datasets (Parquet shards, BEIR, TREC qrels, dataset card, grade histogram).', __name__)
