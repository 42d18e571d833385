"""Training datasets and exports.

Graded labels (LABELS) + candidates + documents + queries -> the datasets the two training stages
consume, and exports users take anywhere:

- `config`     the `datasets` section (`DatasetsConfig`)
- `common`     input tables, labels per query, injection-flagged pairs
- `human`      LABELS from human qrels (the same builders on human judgments)
- `sampling`   multi-scale group sampling (5–20 documents, seeded per query)
- `reranker`   groupwise RL view (TRL GRPOTrainer) and SFT view (teacher or fused-label targets)
- `retriever`  (anchor, positive, hard negatives) with the false-negative guard and per-rule counts
- `export`     sharded atomic Parquet, the sentence-transformers view, BEIR folder, TREC qrels, manifest
- `card`       dataset card (README.md), grade histogram, judges and their agreement
- `stage`      the stage `build_datasets` (library entry on tables: `build_datasets`)
- `export_stage` the stage `export` (library entry: `export_datasets`)

Nothing here imports torch, transformers or sentence-transformers.
"""
from __future__ import annotations

__all__ = ["config", "common", "human", "sampling", "reranker", "retriever", "export", "card", "stage", "export_stage"]
