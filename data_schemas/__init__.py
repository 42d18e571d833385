"""Single source of truth for every table the grouprank stages exchange."""
from .base import Field, SchemaError, Table, read_extra
from .tables import (ADAPTATION_EXAMPLES, ALL_TABLES, CANDIDATES, DOCUMENTS, JUDGMENTS, LABELS, METRICS, QRELS, QUARANTINE,
                     QUERIES, RANKING, RERANKER_RL, RERANKER_SFT, RETRIEVER_EXAMPLES, RUNS)

__all__ = ["Field", "SchemaError", "Table", "read_extra", "ADAPTATION_EXAMPLES", "ALL_TABLES", "CANDIDATES", "DOCUMENTS",
           "JUDGMENTS", "LABELS", "METRICS", "QRELS", "QUARANTINE", "QUERIES", "RANKING", "RERANKER_RL",
           "RERANKER_SFT", "RETRIEVER_EXAMPLES", "RUNS"]
