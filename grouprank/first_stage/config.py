"""Configuration of candidate retrieval (the `retrieve` stage and every user of the hybrid retriever)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from grouprank.config_section import Section


class BM25Settings(Section):
    """bm25s's scoring and its tokenizer (grouprank.first_stage.bm25.BM25Retriever's arguments)."""
    k1: float = 1.5
    b: float = 0.75
    method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = "lucene"
    stemmer: str | None = Field("english", description="PyStemmer language, or None for no stemming")
    stopwords: str | None = Field("en", description="bm25s stopword list name, or None")


class IndexSettings(Section):
    """The FAISS index over the dense vectors (grouprank.first_stage.ann.FaissIndex): its kind and that
    kind's parameters (the others are ignored)."""
    kind: Literal["flat", "hnsw", "ivfpq"] = "flat"
    m: int = Field(32, ge=2, description="hnsw: links per vector")
    ef_construction: int = Field(200, ge=1, description="hnsw: build-time search width")
    ef_search: int = Field(256, ge=1, description="hnsw: search width, raised to the search depth when smaller")
    nlist: int | None = Field(None, ge=1, description="ivfpq: IVF lists; None = about 4*sqrt(n_docs)")
    nprobe: int = Field(32, ge=1, description="ivfpq: lists searched")
    pq_m: int | None = Field(None, ge=1, description="ivfpq: PQ sub-quantizers (bytes/doc at 8 bits); None = dim/8")


# keys that moved: an old configuration gets an error naming the new key
MOVED = {**{f"bm25_{k}": f"retrieval.bm25.{k}" for k in ("k1", "b", "method", "stemmer", "stopwords")},
         "hnsw_m": "retrieval.index.m", "hnsw_ef_construction": "retrieval.index.ef_construction",
         "hnsw_ef_search": "retrieval.index.ef_search", "ivf_nlist": "retrieval.index.nlist",
         "ivf_nprobe": "retrieval.index.nprobe", "pq_m": "retrieval.index.pq_m"}


class RetrievalConfig(Section):
    """Candidate retrieval (grouprank.first_stage): BM25 + dense, fused, pooled.
    See ARCHITECTURE.md "Retrieval and scale"."""
    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data):
        from grouprank.config_section import refuse_moved
        return refuse_moved(data, MOVED, "retrieval")

    bm25: BM25Settings = Field(default_factory=BM25Settings)
    include_title: bool = Field(True, description="index title + ' ' + text (BEIR convention) for BM25 and dense")
    dense_model: str = Field("all-MiniLM-L6-v2", description="sentence-transformers name or path; "
                             "'all-MiniLM-L6-v2' resolves to the bundled offline copy")
    dense_backend: Literal["torch", "torch-bf16", "onnx", "onnx-int8", "auto"] = Field(
        "onnx", description="onnx: ONNX Runtime on CPU, the same vectors as torch (exported once per work dir), "
        "~1.1-1.2x torch's speed; onnx-int8: dynamically quantised, ~1.7x (SciFact, 2 cores); torch-bf16: bfloat16 "
        "weights, ~2.5x where the CPU has native bf16 (AMX / AVX512-BF16), slow where not; "
        "auto: torch-bf16 where the CPU has native bf16, else onnx (torch on a GPU); "
        "torch: sentence-transformers on `device` (use it with a GPU)")
    device: str = Field("cpu", description="torch device for the torch backend")
    query_prompt: str | None = None
    document_prompt: str | None = None
    max_seq_length: int | None = Field(256, description="the dense encoder's window in tokens: longer texts "
                                       "are truncated (counted in the retrieve report), unless dense_chunking "
                                       "is maxp")
    dense_chunking: Literal["none", "maxp"] = Field(
        "none", description="none: encode each document whole (truncated to max_seq_length); maxp: split it "
        "into overlapping passages of dense_chunk_tokens and score the document by its best passage (MaxP)")
    dense_chunk_tokens: int | None = Field(None, ge=16, description="maxp: passage length in tokens (default "
                                           "max_seq_length)")
    dense_chunk_stride: int | None = Field(None, ge=1, description="maxp: tokens between passage starts "
                                           "(default half a passage: 50% overlap)")
    batch_size: int = 64
    index: IndexSettings = Field(default_factory=IndexSettings, description="a kind alone is short for "
                                 "{kind: ...}: `index: hnsw`")
    shard_size: int = Field(8192, gt=0, description="documents per resumable encoding shard")
    fusion: Literal["minmax", "rrf"] = "minmax"
    bm25_weight: float = Field(0.5, ge=0.0, le=1.0, description="minmax: w*BM25 + (1-w)*dense")
    rrf_k: int = 60
    union_rescore: bool = Field(True, description="score every document of the union of both top-`depth` "
                                "lists with both retrievers before fusing (no missing-score artefact)")
    depth: int = Field(200, gt=0, description="depth of each retriever's list and of the fused ranking")
    pool_top: int = 10
    pool_sampled: int = 40
    pool_sample_from: tuple[int, int] = (11, 200)

    @field_validator("index", mode="before")
    @classmethod
    def _kind_alone(cls, v):
        return {"kind": v} if isinstance(v, str) else v


def as_retrieval_config(cfg) -> RetrievalConfig:
    """The retrieval settings of a RunConfig, a RetrievalConfig itself, or the defaults for None."""
    if cfg is None:
        return RetrievalConfig()
    return cfg.retrieval if hasattr(cfg, "retrieval") else cfg
