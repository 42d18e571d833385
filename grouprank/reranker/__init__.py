"""Groupwise reranker (GroupRank): prompt and parser, the paper's reward, SFT + GRPO training
with TRL, and groupwise / pointwise / listwise inference.

Light on import: torch/transformers/trl are imported inside the functions that need them.
"""
from grouprank.reranker.prompt import (  # noqa: F401
    SYSTEM_PROMPT,
    TEMPLATE_VERSION,
    ParsedGroup,
    build_messages,
    parse_output,
    render_target,
)
