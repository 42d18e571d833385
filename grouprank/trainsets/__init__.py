"""Training datasets and exports.

Graded labels (LABELS) + candidates + documents + queries -> the datasets the two training stages
consume, and exports users take anywhere:

- `sampling`   multi-scale group sampling (5–20 documents, seeded per query)
- `reranker`   groupwise RL view (TRL GRPOTrainer) and SFT view (teacher or fused-label targets)
- `retriever`  (anchor, positive, hard negatives) with the false-negative guard and per-rule counts
- `export`     sharded atomic Parquet, the sentence-transformers view, BEIR folder, TREC qrels, manifest
- `card`       dataset card (README.md), grade histogram, judges and their agreement
- `stage`      the stage `build_datasets` (library entry on tables: `build_datasets`)
- `export_stage` the stage `export` (library entry: `export_datasets`)
- `cli`        `grouprank build-datasets`, `grouprank export`

Nothing here imports torch, transformers or sentence-transformers.
"""
from __future__ import annotations

__all__ = ["sampling", "reranker", "retriever", "export", "card", "stage", "cli"]
