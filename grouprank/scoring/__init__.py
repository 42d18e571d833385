"""Scoring modes: how a query's candidates become LLM calls and how answers become scores, one
object per mode, consumed by the judges (`grouprank.judges`, through the LLM client) and by the
reranker (`grouprank.reranker.inference`, through its backend). Each mode plans its calls
(`plan(pools, queries, doc_text)`), reads an answer (`parse(text, n)` -> `call.Scored`) and
follows the one failure policy of `call` (salvage what parses; the rest have no score).

- `pointwise.PointwiseMode`: one call per document, the pointwise prompt
- `groupwise.GroupwiseMode`: seeded groups of near-equal size (`groups`), passes
- `listwise.ListwiseMode`: whole list or RankGPT's sliding windows (`windows`); `ListwiseRun` is the loop
- `rng.seeded_rng` (numpy: `seeded_generator`): the one per-query random generator (groups, pooling,
  training-set sampling), each purpose keeping its pinned stream
- `spec.ScoringSpec`: the knobs (group_size, passes, window, stride)

The prompts those calls send are `grouprank.prompts`.
"""
