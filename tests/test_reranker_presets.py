"""GPU presets cannot run here: validate them against RunConfig and build the TRL /
peft configs they produce, checking the paper's values."""
from pathlib import Path

import pytest

from grouprank.config import RunConfig
from grouprank.reranker.train import make_grpo_config, make_lora_config, make_sft_config

PRESETS = sorted((Path(__file__).resolve().parent.parent / "configs" / "reranker").glob("*.yaml"))


def test_presets_exist():
    names = {p.name for p in PRESETS}
    assert {"qwen2.5-7b-grouprank-train.yaml", "qwen2.5-7b-grouprank-rerank-vllm.yaml", "tiny-cpu-dl19.yaml",
            "smollm2-cpu-scifact.yaml"} <= names
    # one file per preset name: a run configuration never shares its name with a preset
    from grouprank.reranker.config import PRESET_DIR
    assert not names & {p.name for p in PRESET_DIR.glob("*.yaml")}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_preset_validates_and_builds_trainer_configs(path, tmp_path):
    cfg = RunConfig.load(path)
    rc = cfg.reranker
    sft = make_sft_config(rc, tmp_path / "sft", use_cpu=True)
    grpo = make_grpo_config(rc, tmp_path / "grpo", use_cpu=True)
    assert sft.learning_rate == rc.sft_lr and grpo.learning_rate == rc.grpo_lr
    assert grpo.num_generations == rc.num_generations and grpo.beta == rc.beta_kl
    assert grpo.generation_batch_size % grpo.num_generations == 0
    if cfg.rerank.backend == "llm" and cfg.rerank.endpoint:
        cfg.endpoint(cfg.rerank.endpoint)  # names an existing endpoint


def test_7b_training_preset_has_the_papers_values(tmp_path):
    cfg = RunConfig.load(next(p for p in PRESETS if p.name == "qwen2.5-7b-grouprank-train.yaml"))
    rc = cfg.reranker
    assert rc.base_model == "Qwen/Qwen2.5-7B-Instruct"
    grpo = make_grpo_config(rc, tmp_path, use_cpu=True)
    assert (grpo.num_generations, grpo.beta, grpo.learning_rate, grpo.temperature) == (8, 0.001, 1e-5, 1.0)
    assert grpo.use_vllm and grpo.vllm_mode == "colocate" and grpo.bf16
    sft = make_sft_config(rc, tmp_path, use_cpu=True)
    assert (sft.num_train_epochs, sft.learning_rate, sft.completion_only_loss) == (5, 3e-5, True)
    lora = make_lora_config(rc, 28)
    assert lora.r == 32 and lora.lora_alpha == 64 and lora.lora_dropout == 0.05 and lora.layers_to_transform is None   # every layer
    from grouprank.reranker.config import preset_name
    assert preset_name(rc) is None                                   # no CPU preset for a GPU base model
    assert cfg.rerank.doc_chars is None and cfg.rerank.top == 100    # so no preset limits in inference


def test_rerank_preset_has_the_authors_inference_settings():
    cfg = RunConfig.load(next(p for p in PRESETS if p.name == "qwen2.5-7b-grouprank-rerank-vllm.yaml"))
    rc = cfg.rerank
    assert (rc.mode, rc.top, rc.group_size, rc.alpha, rc.temperature, rc.top_p) == \
        ("groupwise", 100, 20, 0.6, 0.3, 0.8)
    assert cfg.endpoint(rc.endpoint).base_url.startswith("http://127.0.0.1")
    # an endpoint's 7B model: no CPU preset layer under it (documents whole, every query reranked)
    assert rc.doc_chars is None and cfg.evaluation.rerank_max_queries is None


def test_bad_preset_values_are_rejected(tmp_path):
    from pydantic import ValidationError
    bad = tmp_path / "bad.yaml"
    bad.write_text("reranker:\n  mode: sideways\n")
    with pytest.raises(ValidationError):
        RunConfig.load(bad)
    bad.write_text("reranker:\n  num_generationz: 8\n")
    with pytest.raises(ValidationError):
        RunConfig.load(bad)


def test_tiny_cpu_preset_is_a_layer_under_the_configuration():
    from grouprank.reranker.config import RerankerConfig
    cfg = RunConfig.load(None, {"reranker.base_model": "tiny", "reranker.grpo_steps": 3, "reranker.sft_lr": 1e-4})
    t = cfg.reranker
    assert t.grpo_steps == 3 and t.sft_lr == 1e-4                    # the configuration's own values win
    assert t.sft_epochs == 3.0 and t.train_max_group_size == 8 and t.train_doc_chars == 120
    assert t.lora is None and RerankerConfig().lora.r == 32          # the preset: no LoRA; the default: rank 32
    # a round trip through JSON (a Prefect parameter) changes nothing
    assert RunConfig.model_validate(cfg.model_dump(mode="json")) == cfg


def test_preset_never_overrides_an_explicit_value_equal_to_the_default(tmp_path):
    """defaults < preset < file < --set: a value the configuration sets wins even when it equals the
    field's default (the smollm2-cpu preset sets rerank top 10, group_size 5 and reranker lora null)."""
    from grouprank.reranker.config import RerankConfig
    defaults = RerankConfig.model_fields
    f = tmp_path / "run.yaml"
    f.write_text(f"rerank:\n  top: {defaults['top'].default}\nreranker:\n  lora: {{r: 32}}\n")
    cfg = RunConfig.load(f, {"rerank.group_size": defaults["group_size"].default})
    rr = cfg.rerank   # what the stages use
    assert (rr.top, cfg.reranker.lora.r, rr.group_size) == (100, 32, 20)
    assert rr.doc_chars == 100                                        # a key nobody set: the preset's
    # the file over the preset, --set over the file
    f.write_text("rerank:\n  top: 30\n")
    assert RunConfig.load(f, {"rerank.top": 100}).rerank.top == 100
    assert RunConfig.load(f).rerank.top == 30


def test_cpu_default_is_smollm2_with_its_preset():
    from grouprank.reranker.config import RerankerConfig, preset_name
    cfg = RunConfig.load(None, {"reranker.grpo_steps": 7})
    e = cfg.reranker
    assert e.base_model == "smollm2" and preset_name(e) == "smollm2-cpu"
    assert e.grpo_steps == 7                                         # set by the configuration: kept
    rr = cfg.rerank
    assert (rr.group_size, rr.top, e.train_max_group_size, e.train_doc_chars, rr.doc_chars) == (5, 10, 5, 100, 100)
    assert e.train_top_layers == 8 and e.lora is None and e.bf16 is True
    assert cfg.evaluation.rerank_max_queries == 16                   # the preset's layer spans sections
    assert preset_name(RerankerConfig(base_model="tiny")) == "tiny-cpu"
    from grouprank.reranker.config import RerankConfig
    assert RunConfig.load(None, {"reranker.preset": None}).rerank.top == RerankConfig.model_fields["top"].default
    from grouprank.errors import UserError
    with pytest.raises(UserError, match="reranker.preset 'nope'"):
        RunConfig.load(None, {"reranker.preset": "nope"})
    lora = make_lora_config(RerankerConfig(base_model="x", train_top_layers=2), 30)
    assert list(lora.layers_to_transform) == [28, 29]


def test_moved_key_is_an_error_naming_the_new_key():
    from pydantic import ValidationError
    with pytest.raises(ValidationError, match="evaluation.rerank_max_queries"):
        RunConfig.load(None, {"reranker.eval_max_queries": 3})
    with pytest.raises(ValidationError, match="reranker.lora.r"):
        RunConfig.load(None, {"reranker.lora_r": 16})
    with pytest.raises(ValidationError, match="reranker.grpo_args.use_vllm"):
        RunConfig.load(None, {"reranker.use_vllm": True})
    # inference has its own section: the old keys name theirs, the infer_ prefix is gone
    with pytest.raises(ValidationError, match="rerank.top"):
        RunConfig.load(None, {"reranker.top": 10})
    with pytest.raises(ValidationError, match="rerank.doc_chars"):
        RunConfig.load(None, {"reranker.infer_doc_chars": 10})
    with pytest.raises(ValidationError, match="rerank.max_tokens"):
        RunConfig.load(None, {"rerank.infer_max_tokens": 10})
