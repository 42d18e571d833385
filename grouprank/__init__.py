"""grouprank: synthesize graded retrieval/ranking training data with LLM judges (GroupRank).

A plain library (no Prefect imports): one subpackage per stage. Orchestration lives in `flows/`.
"""
__version__ = "0.1.0"
