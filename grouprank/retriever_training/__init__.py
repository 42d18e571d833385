"""Dense retriever contrastive fine-tuning (sentence-transformers) on the synthesized data.

Modules (heavy imports — torch, sentence-transformers, datasets — happen inside functions):

- `data`      read retriever examples (the RETRIEVER_EXAMPLES table or the exported
              anchor/positive/negative_1..n Parquet), select rows and negatives, hold out queries,
              and build the reference examples from human qrels with the same negatives recipe
- `train`     `train_model`: SentenceTransformerTrainer + MultipleNegativesRankingLoss (or the
              cached GradCache variant), no-duplicates batches; the model card
- `evaluate`  `DenseEvaluator`: encode the corpus once per model (persisted embeddings shared
              with the retrieval stage), exact inner-product search, nDCG@10 etc. via
              `grouprank.evaluation.metrics.evaluate`
- `remine`    re-mine hard negatives with the fine-tuned model, keeping the false-negative guard
- `stage`     the stage `train_retriever` (`grouprank train-retriever`); `train_retriever` is the
              library entry on tables
"""
from __future__ import annotations

__all__ = ["data", "train", "evaluate", "remine", "stage"]
