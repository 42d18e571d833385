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
    """Candidate retrieval (grouprank.retrieval): BM25 + dense, fused, pooled.
    See ARCHITECTURE.md "Retrieval and scale"."""
    bm25_k1: float = 1.5
    bm25_b: float = 0.75
    bm25_method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = "lucene"
    bm25_stemmer: str | None = Field("english", description="PyStemmer language, or None for no stemming")
    bm25_stopwords: str | None = Field("en", description="bm25s stopword list name, or None")
    include_title: bool = Field(True, description="index title + ' ' + text (BEIR convention) for BM25 and dense")
    dense_model: str = Field("all-MiniLM-L6-v2", description="sentence-transformers name or path; "
                             "'all-MiniLM-L6-v2' resolves to the bundled offline copy")
    dense_backend: Literal["torch", "onnx", "onnx-int8"] = "torch"
    device: str = Field("cpu", description="torch device for the torch backend")
    query_prompt: str | None = None
    document_prompt: str | None = None
    max_seq_length: int | None = 256
    batch_size: int = 64
    index: Literal["flat", "hnsw", "ivfpq"] = "flat"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = Field(256, description="raised to the search depth when smaller")
    ivf_nlist: int | None = Field(None, description="IVF lists; None = about 4*sqrt(n_docs)")
    ivf_nprobe: int = 32
    pq_m: int | None = Field(None, description="PQ sub-quantizers (bytes/doc at 8 bits); None = dim/8")
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
    seed: int = 13


class LLMEndpoint(_Section):
    name: str = "default"
    base_url: str | None = Field(None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    model: str = "local"
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the key")
    api_key_secret: str | None = Field(None, description="Prefect Secret block name (flows only)")
    max_concurrency: int = 16
    timeout_s: float = 120.0
    max_retries: int = Field(5, description="retries of 429/5xx/timeouts/connection errors/malformed responses")
    backoff_base_s: float = Field(0.5, description="retry n waits uniform(0, min(backoff_max_s, base*2**n))")
    backoff_max_s: float = 30.0
    retry_after_max_s: float = Field(120.0, description="cap on an honoured Retry-After header")
    parse_retries: int = Field(1, description="extra asks after an answer fails validation")
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
    """Groupwise reranker (issue 8): training (SFT then GRPO with TRL) and inference.
    Presets for real GPU runs: configs/reranker/*.yaml."""
    base_model: str | None = Field(None, description="HF model id/path; None builds the tiny CPU policy")
    # --- SFT warm start (paper: 5 epochs, lr 3e-5)
    sft_epochs: float = 5.0
    sft_lr: float = 3e-5
    sft_max_length: int | None = Field(8192, description="max tokens of an SFT example (prompt+target)")
    # --- GRPO (paper: 8 rollouts, KL 0.001, lr 1e-5, LoRA r=32, temperature 1.0)
    grpo_steps: int = 50
    grpo_lr: float = 1e-5
    num_generations: int = 8
    beta_kl: float = 0.001
    temperature: float = 1.0
    max_completion_length: int = 1024
    use_lora: bool = Field(True, description="LoRA for base_model runs (the tiny CPU policy is fully tuned)")
    lora_r: int = 32
    lora_alpha: int = 64
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | str = "all-linear"
    per_device_batch_size: int = Field(8, description="per-device batch (GRPO: completions, not prompts)")
    grad_accum: int = 1
    bf16: bool = False
    gradient_checkpointing: bool = False
    use_vllm: bool = Field(False, description="GRPO generation through vLLM (GPU runs)")
    vllm_mode: Literal["colocate", "server"] = "colocate"
    reward_gain: Literal["linear", "exp"] = Field("linear", description="NDCG gain in the reward")
    reward_rel_threshold: int = Field(1, description="gold grade >= this counts as relevant for Recall@10")
    sft_args: dict[str, Any] = Field(default_factory=dict, description="extra trl.SFTConfig arguments")
    grpo_args: dict[str, Any] = Field(default_factory=dict, description="extra trl.GRPOConfig arguments")
    seed: int = 13
    # --- inference (authors' code: group 20, top-100, T=0.3, top_p=0.8, 6 repeats, alpha 0.6)
    mode: Literal["groupwise", "pointwise", "listwise"] = "groupwise"
    backend: Literal["llm", "transformers"] = Field("llm", description="llm: the project's LLMClient "
                                                     "against an endpoint; transformers: in-process model")
    endpoint: str | None = Field(None, description="name in llm.endpoints (default: the first)")
    model_path: str | None = Field(None, description="model for the transformers backend")
    top: int = Field(100, description="rerank this many first-stage candidates per query")
    group_size: int = 20
    passes: int = Field(1, description="test-time scaling: reshuffle and rescore, average per document")
    alpha: float = Field(0.6, description="final = alpha*group/10 + (1-alpha)*minmax(first stage)")
    max_doc_chars: int = 3000
    infer_temperature: float = 0.3
    infer_top_p: float = 0.8
    infer_max_tokens: int = 2048
    window: int = Field(20, description="listwise sliding window size")
    stride: int = Field(10, description="listwise sliding window step")


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
