"""Prefect flow `fuse-labels`: Fuse the judges' judgments into graded labels (rank or score fusion).

Thin glue over `grouprank.pipeline.STAGES` (see `flows.dag.stage_flow`).
"""
from flows.dag import stage_flow

TARGETS = ('fuse',)

fuse_flow = stage_flow('fuse-labels', TARGETS, "Fuse the judges' judgments into graded labels (rank or score fusion).", __name__)
