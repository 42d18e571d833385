"""Groupwise reranker (GroupRank): SFT + GRPO training with TRL (`train`, `tiny`, `data`), the
paper's reward (`reward`), and groupwise / pointwise / listwise inference (`inference`).

The prompts and parsers are `grouprank.prompts` (shared with the judges); a document's text is
`grouprank.text.document_text`. Light on import: torch/transformers/trl are imported inside the
functions that need them.
"""
