"""Prefect flow `retrieve`: Retrieve candidate pools (BM25 + dense, fused, pooled) for the mined queries.

Thin glue over `grouprank.pipeline.STAGES` (see `flows.dag.stage_flow`).
"""
from flows.dag import stage_flow

TARGETS = ('retrieve',)

retrieve_flow = stage_flow('retrieve', TARGETS, 'Retrieve candidate pools (BM25 + dense, fused, pooled) for the mined queries.', __name__)
