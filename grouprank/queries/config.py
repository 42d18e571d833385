"""Configuration of the `mine_queries` stage."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from grouprank.config_section import Section


class QuerySource(Section):
    """A query file (JSONL / CSV / TSV / Parquet) or a Hugging Face dataset saved with
    `save_to_disk`, read with a column mapping; mined as existing queries or used as an
    evaluation set for the leakage guard."""
    path: str
    format: Literal["auto", "jsonl", "csv", "tsv", "parquet", "hf"] = Field(
        "auto", description="auto: from the file suffix; a directory is a HF dataset")
    id_column: str = "query_id"
    text_column: str = "text"
    split: str = Field("train", description="label written to the split column")
    hf_split: str | None = Field(None, description="split of a HF DatasetDict (default: the only/first one)")
    id_prefix: str = Field("", description="prefix for query ids (to keep ids of several sources apart)")
    name: str | None = Field(None, description="collection label (default: the file or folder name)")


class QueryMiningConfig(Section):
    """Query mining (grouprank.queries): existing queries + LLM-generated ones, then leakage guard,
    round-trip filter and dedup. Every query is kept in mined_queries.parquet with its decision."""
    splits: list[str] = Field(default_factory=lambda: ["auto"], description="existing query splits to mine; "
                              "auto: train when the collection has one, else all its judged queries")
    auto_holdout_fraction: float = Field(0.2, ge=0, lt=1, description="a collection without a train split mined "
                                         "with splits auto: this seeded share of its judged queries is not mined "
                                         "but kept for evaluation (and guarded against leakage)")
    files: list[QuerySource] = Field(default_factory=list, description="query files / HF datasets to mine")
    max_queries: int | None = Field(None, description="cap on existing queries per source (seeded sample)")
    generate: bool = Field(False, description="generate queries with the LLM (needs an endpoint)")
    endpoint: str | None = Field(None, description="name in llm.endpoints (default: the first)")
    generate_docs: int = Field(100, description="documents sampled for generation")
    query_types: list[str] = Field(default_factory=lambda: ["keyword", "question", "reasoning"])
    templates: dict[str, str] = Field(default_factory=dict,
                                      description="query type -> template id@version (default: latest)")
    sampling: Literal["random", "length_stratified"] = "random"
    length_strata: int = Field(5, gt=0, description="length bins (quantiles) for length_stratified sampling")
    min_doc_chars: int = Field(40, description="documents shorter than this are not sampled")
    exclude_eval_docs: bool = Field(False, description="never generate or extract from documents judged for "
                                    "an evaluation query (needs qrels)")
    extract_docs: int = Field(0, ge=0, description="extractive pseudo-queries (no LLM, grouprank.queries.extractive): "
                              "this many sampled documents each give their last sentence of >= extract_min_words "
                              "words as a query; the dataset builder removes it from the document where that is "
                              "the training positive. 0: off")
    extract_min_words: int = Field(8, ge=1, description="shortest sentence an extractive query may be")
    extract_sampling: Literal["random", "unreached"] = Field(
        "unreached", description="documents for extractive queries: unreached = those in no existing query's "
        "hybrid top extract_reach_k (GPL-style: queries where the mined ones leave the corpus uncovered; "
        "topped up at random when too few), random = any (queries.sampling)")
    extract_reach_k: int = Field(10, ge=1, description="a document in an existing query's hybrid top k is reached")
    few_shot: int = Field(0, description="(query, document) examples from the mined queries + qrels "
                          "shown in generation prompts (Promptagator style)")
    temperature: float | None = Field(None, description="generation temperature (default: the endpoint's)")
    max_tokens: int | None = Field(None, description="override of the templates' max_tokens")
    dedup_threshold: float = Field(0.95, description="near-duplicate: embedding cosine >= this")
    dedup_existing: Literal["exact", "near"] = Field(
        "exact", description="existing (human) queries among themselves: exact dedup only (default; "
        "keeps deliberate minimal pairs such as SciFact's negated claims) or near dedup too")
    leakage_threshold: float = Field(0.90, description="leakage: embedding cosine >= this to an eval query")
    leakage_lexical_threshold: float = Field(
        0.85, description="leakage: max(normalised edit similarity, token Jaccard) >= this")
    leakage_min_tokens: int = Field(3, description="the lexical leakage check needs >= this many tokens in both")
    leakage_eval_splits: list[str] = Field(default_factory=lambda: ["auto"], description="the collection's "
                                           "evaluation splits for the leakage guard; auto: test when the "
                                           "collection has train and test, else none")
    eval_files: list[QuerySource] = Field(default_factory=list, description="more evaluation query sets")
    roundtrip: bool = Field(True, description="apply the round-trip filter to generated queries")
    roundtrip_k: int = Field(20, description="keep a generated query if its source document ranks <= k")
    roundtrip_depth: int = Field(100, description="ranks are recorded down to this depth (null beyond)")
