"""How documents are cut into LLM calls for a scoring mode, shared by a judge (`JudgeSpec`) and the
reranker's inference (`RerankerConfig`): groups for groupwise, windows for listwise."""
from __future__ import annotations

from pydantic import Field

from grouprank.config_section import Section


class ScoringSpec(Section):
    group_size: int = Field(20, ge=1, description="groupwise: documents per group (c; the paper: 20)")
    passes: int = Field(1, ge=1, description="groupwise: reshuffled passes, scores averaged per document "
                        "(test-time scaling)")
    window: int = Field(20, ge=2, description="listwise: sliding-window size")
    stride: int = Field(10, ge=1, description="listwise: sliding-window step (bottom-up, RankGPT)")
