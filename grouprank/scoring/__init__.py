"""How N candidates of one query are cut into LLM calls, shared by the judges and the reranker.

- `groups.split_groups` / `groups.shuffled_groups`: ceil(N/c) disjoint groups of near-equal size
  (groupwise judge, groupwise reranking; DESIGN §2)
- `windows.sliding_windows`: RankGPT's bottom-up sliding windows (listwise judge, listwise reranking)

The prompts those calls send are `grouprank.prompts`.
"""
