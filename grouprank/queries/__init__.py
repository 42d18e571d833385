"""Query mining: existing query sets and LLM-generated queries, with a leakage guard against
evaluation queries, a round-trip filter and deduplication. Every query is kept in the output
QUERIES table with provenance and its decision (kept / leakage / roundtrip / duplicate /
near_duplicate / parse_error / generation_failed); downstream stages use decision == "kept".

    grouprank mine-queries --work-dir W                      # SciFact train claims, test = eval set
    grouprank mine-queries --file q.csv --id-column id --text-column question --eval-file eval.jsonl
    grouprank mine-queries --config run.yaml --generate      # + LLM generation (llm.endpoints)

    from grouprank.queries.mine import mine_queries          # the stage's logic on tables
    table, report = mine_queries(cfg, documents, queries, qrels)

Policies (details in each module):
- leakage: exact, embedding cos >= 0.90, or lexical (edit / token Jaccard) >= 0.85 against any
  evaluation query; negations of an evaluation query count as leakage (same evidence documents);
- dedup: exact for everything; near (cos >= 0.95) for generated queries, against each other and
  against existing ones; existing queries among themselves only exactly unless
  queries.dedup_existing = "near" (human sets hold deliberate minimal pairs);
- round trip: generated queries keep only if the source document ranks <= k (20) under the hybrid
  retriever; the rank (to depth 100) is recorded for every generated query with text.

Modules (nothing heavy is imported at package import):
- `config`      the `queries` section (`QueriesConfig`)
- `sources`     existing queries from a collection split, a JSONL/CSV/TSV/Parquet file or a HF
                dataset on disk, with a column mapping
- `extractive`  extractive pseudo-queries (a document's sentence; no LLM)
- `templates`   versioned prompt templates (keyword / question / reasoning)
- `generation`  document sampling, requests through `grouprank.llm.LLMClient`, tolerant parsing
- `embed`       query embeddings for dedup and the leakage guard, memoised per text
- `leakage`     exact / embedding / lexical near-copy detection against evaluation queries
- `roundtrip`   rank of the source document under the hybrid retriever
- `dedup`       exact and near-duplicate grouping with representatives
- `textsim`     normalisation, bit-parallel Levenshtein, n-gram candidate search
- `mine`        the stage logic on tables: `mine_queries(cfg, documents, queries, qrels)`
- `stage`       the stage `mine_queries`: `run(inputs, cfg, ctx)`
"""
from __future__ import annotations

__all__ = ["config", "sources", "extractive", "templates", "generation", "embed", "leakage", "roundtrip", "dedup",
           "textsim", "mine", "stage"]
