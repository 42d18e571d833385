"""The one run configuration. The CLI, the Prefect flows and the deployments in prefect.yaml
all build a `RunConfig` the same way: defaults < YAML/JSON file < explicit overrides.

Every stage has its own section; a stage's cache key is derived from its section (and the
sections it depends on), so changing e.g. only `judges` reruns judging and what follows.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_data_root() -> Path:
    """Test collections live in ../shared/data beside the repository (never copied into it).
    Override with GROUPRANK_DATA_ROOT."""
    env = os.environ.get("GROUPRANK_DATA_ROOT")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    collection: str = Field("scifact", description="built-in collection name, or a path with `format`")
    format: Literal["builtin", "beir", "bright", "jsonl", "csv", "parquet", "hf"] = "builtin"
    path: str | None = Field(None, description="path for non-builtin formats")
    data_root: str | None = Field(None, description="root of the built-in collections (default ../shared/data)")
    quarantine: bool = Field(False, description="write bad records to a quarantine table instead of failing")


class QueryMiningConfig(_Section):
    splits: list[str] = Field(default_factory=lambda: ["train"], description="existing query splits to mine")
    max_queries: int | None = None
    generate: bool = Field(False, description="generate queries with the LLM (needs an endpoint)")
    generate_docs: int = 100
    query_types: list[str] = Field(default_factory=lambda: ["keyword", "question", "reasoning"])
    sampling: Literal["random", "length_stratified"] = "random"
    dedup_threshold: float = 0.95
    leakage_threshold: float = 0.90
    leakage_eval_splits: list[str] = Field(default_factory=lambda: ["test"])
    roundtrip_k: int = 20
    seed: int = 13


class RetrievalConfig(_Section):
    bm25_k1: float = 1.5
    bm25_b: float = 0.75
    bm25_method: str = "lucene"
    dense_model: str = Field("all-MiniLM-L6-v2", description="sentence-transformers name or path; "
                             "'all-MiniLM-L6-v2' resolves to the bundled offline copy")
    dense_backend: Literal["torch", "onnx", "onnx-int8"] = "torch"
    query_prompt: str | None = None
    document_prompt: str | None = None
    max_seq_length: int | None = 256
    batch_size: int = 64
    index: Literal["flat", "hnsw", "ivfpq"] = "flat"
    fusion: Literal["minmax", "rrf"] = "minmax"
    bm25_weight: float = 0.5
    rrf_k: int = 60
    depth: int = 200
    pool_top: int = 10
    pool_sampled: int = 40
    pool_sample_from: tuple[int, int] = (11, 200)
    seed: int = 13


class LLMEndpoint(_Section):
    name: str = "default"
    base_url: str | None = Field(None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    model: str = "local"
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the key")
    api_key_secret: str | None = Field(None, description="Prefect Secret block name (flows only)")
    max_concurrency: int = 16
    timeout_s: float = 120.0
    max_retries: int = 5
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 2048
    json_schema: bool = Field(False, description="send response_format json_schema (endpoint must support it)")
    price_prompt_per_mtok: float = 0.0
    price_completion_per_mtok: float = 0.0


class JudgeSpec(_Section):
    id: str
    kind: Literal["pointwise", "listwise", "groupwise", "local"]
    endpoint: str | None = Field(None, description="name of an entry in llm.endpoints (None for local)")
    group_size: int = 20
    passes: int = 1
    window: int = 20
    stride: int = 10
    max_doc_chars: int = 3000


class LLMConfig(_Section):
    endpoints: list[LLMEndpoint] = Field(default_factory=list)
    cache_path: str | None = Field(None, description="SQLite cache (default <work_dir>/llm_cache.sqlite)")


class JudgesConfig(_Section):
    judges: list[JudgeSpec] = Field(default_factory=lambda: [JudgeSpec(id="local", kind="local")])
    fusion: Literal["rank", "score_mean"] = "rank"
    beta: float = 0.5
    grade_scale: int = Field(3, description="top grade of the output scale 0..grade_scale")
    dry_run: bool = False


class DatasetsConfig(_Section):
    group_min: int = 5
    group_max: int = 20
    groups_per_query: int = 3
    positive_grade: int = 2
    negatives_per_example: int = 4
    negative_max_grade: int = 0
    false_negative_margin: float = 0.05
    shard_max_rows: int = 50_000
    seed: int = 13


class RerankerConfig(_Section):
    base_model: str | None = Field(None, description="HF model id/path; None builds the tiny CPU policy")
    sft_epochs: float = 5.0
    sft_lr: float = 3e-5
    grpo_steps: int = 50
    grpo_lr: float = 1e-5
    num_generations: int = 8
    beta_kl: float = 0.001
    lora_r: int = 32
    temperature: float = 1.0
    group_size: int = 20
    passes: int = 1
    alpha: float = 0.6


class RetrieverTrainConfig(_Section):
    base_model: str = "all-MiniLM-L6-v2"
    epochs: float = 1.0
    batch_size: int = 32
    lr: float = 2e-5
    loss: Literal["mnrl", "cached_mnrl"] = "mnrl"
    remine_rounds: int = 0


class RunConfig(BaseModel):
    """One run of the pipeline."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = "default"
    work_dir: str = Field("grouprank_output", description="where tables, indexes, caches and exports go")
    data: DataConfig = Field(default_factory=DataConfig)
    queries: QueryMiningConfig = Field(default_factory=QueryMiningConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    judges: JudgesConfig = Field(default_factory=JudgesConfig)
    datasets: DatasetsConfig = Field(default_factory=DatasetsConfig)
    reranker: RerankerConfig = Field(default_factory=RerankerConfig)
    retriever: RetrieverTrainConfig = Field(default_factory=RetrieverTrainConfig)

    # --- helpers ---------------------------------------------------------------------
    @property
    def work_path(self) -> Path:
        return Path(self.work_dir).expanduser().resolve()

    def data_root(self) -> Path:
        return Path(self.data.data_root) if self.data.data_root else default_data_root()

    def section_hash(self, *sections: str) -> str:
        payload = {s: getattr(self, s).model_dump(mode="json") for s in sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def endpoint(self, name: str | None) -> LLMEndpoint:
        for e in self.llm.endpoints:
            if e.name == name:
                return e
        raise KeyError(f"no LLM endpoint named {name!r} in llm.endpoints "
                       f"(have {[e.name for e in self.llm.endpoints]})")

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> "RunConfig":
        data: dict[str, Any] = {}
        if path:
            p = Path(path)
            text = p.read_text()
            if p.suffix in (".yaml", ".yml"):
                import yaml
                data = yaml.safe_load(text) or {}
            else:
                data = json.loads(text)
        for k, v in (overrides or {}).items():
            _set_dotted(data, k, v)
        return cls.model_validate(data)


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def parse_override(s: str) -> tuple[str, Any]:
    """'retrieval.depth=100' -> ('retrieval.depth', 100); values parsed as JSON when possible."""
    if "=" not in s:
        raise ValueError(f"override {s!r} is not KEY=VALUE")
    k, v = s.split("=", 1)
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v
