"""Prefect flow `judge`: Judge the candidate pools with the configured judges (LLM or local) and fuse the
judgments into graded labels.

Thin glue over `grouprank.pipeline.STAGES` (see `flows.dag.stage_flow`).
"""
from flows.dag import stage_flow

TARGETS = ('judge', 'fuse')

judge_flow = stage_flow('judge', TARGETS, 'Judge the candidate pools with the configured judges (LLM or local) and fuse the judgments into graded labels. The judge-only deployment runs this flow.', __name__)
