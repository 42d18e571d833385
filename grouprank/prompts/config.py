"""Configuration shared by every prompt the pipeline builds (LLM judges, query generation, the
reranker's training examples and its inference)."""
from __future__ import annotations

from pydantic import Field

from grouprank.config_section import Section


class PromptConfig(Section):
    max_doc_chars: int = Field(3000, ge=1, description="documents are cut to this many characters in every "
                               "prompt (judges, query generation, reranker examples and inference; the "
                               "authors' code: 3000)")
    max_query_chars: int = Field(1000, ge=1, description="queries are cut to this many characters in every "
                                 "prompt, like documents (judges, reranker examples and inference); each cut "
                                 "is logged as a warning with the query id")
