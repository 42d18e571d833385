"""SFT warm start then GRPO, with TRL (SFTTrainer, GRPOTrainer).

Data (tables from the dataset-building stage, or `reranker.data.groups_from_qrels`):

* SFT view: column `messages` (system + user + assistant target). It is fed to `SFTTrainer` as a
  conversational prompt–completion dataset (prompt = system+user, completion = the assistant
  turn), so the loss covers only the target, whatever the model's chat template.
* RL view: column `prompt` (system + user messages, TRL conversational format) plus the gold
  columns `gold_grades`, `gold_scores`, which TRL hands to the reward function per completion.

Real GPU runs: `grouprank train-reranker --config configs/reranker/qwen2.5-7b-grouprank.yaml ...`
(base model + LoRA via peft, vLLM generation via `reranker.use_vllm`); see configs/reranker/README.md.
CPU proof: `bench/grpo_cpu.py` (tiny Qwen2 policy from a config, tokenizer trained locally).

Heavy imports (torch, transformers, trl, peft, datasets) happen inside the functions.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- data views

def _plain_messages(msgs) -> list[dict]:
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in msgs]


def sft_dataset(rows: list[dict]):
    """SFT view rows (with `messages`) -> datasets.Dataset of conversational prompt/completion."""
    from datasets import Dataset
    out = []
    for r in rows:
        msgs = _plain_messages(r["messages"])
        if not msgs or msgs[-1]["role"] != "assistant":
            raise ValueError(f"SFT example {r.get('example_id')!r}: last message must be the assistant target")
        out.append({"prompt": msgs[:-1], "completion": msgs[-1:]})
    return Dataset.from_list(out)


def rl_dataset(rows: list[dict]):
    """RL view rows -> datasets.Dataset with `prompt`, `gold_grades`, `gold_scores`."""
    from datasets import Dataset
    out = []
    for r in rows:
        grades = [int(g) for g in r["gold_grades"]]
        scores = r.get("gold_scores")
        scores = [float(s) for s in scores] if scores is not None else [float(g) for g in grades]
        if len(scores) != len(grades):
            raise ValueError(f"RL example {r.get('example_id')!r}: gold_scores and gold_grades differ in length")
        out.append({"prompt": _plain_messages(r["prompt"]), "gold_grades": grades, "gold_scores": scores})
    return Dataset.from_list(out)


# --------------------------------------------------------------------------- trainer configs

def make_sft_config(rc, output_dir: str | Path, seed: int = 13, **overrides):
    """`trl.SFTConfig` from a RerankerConfig (+ rc.sft_args, + overrides)."""
    from trl import SFTConfig
    kw: dict[str, Any] = dict(
        output_dir=str(output_dir), num_train_epochs=rc.sft_epochs, learning_rate=rc.sft_lr,
        per_device_train_batch_size=rc.per_device_batch_size, gradient_accumulation_steps=rc.grad_accum,
        max_length=rc.sft_max_length, bf16=rc.bf16, activation_checkpointing=rc.gradient_checkpointing,
        completion_only_loss=True, logging_steps=10, save_strategy="no", report_to="none", seed=seed,
        lr_scheduler_type="cosine", warmup_steps=0.03,
    )
    kw.update(rc.sft_args)
    kw.update(overrides)
    return SFTConfig(**kw)


def make_grpo_config(rc, output_dir: str | Path, seed: int = 13, **overrides):
    """`trl.GRPOConfig` from a RerankerConfig (+ rc.grpo_args, + overrides).
    Paper: 8 rollouts, KL 0.001, lr 1e-5, temperature 1.0 (LoRA r=32 via `make_lora_config`)."""
    from trl import GRPOConfig
    kw: dict[str, Any] = dict(
        output_dir=str(output_dir), max_steps=rc.grpo_steps, learning_rate=rc.grpo_lr,
        num_generations=rc.num_generations, beta=rc.beta_kl, temperature=rc.temperature, top_p=1.0,
        per_device_train_batch_size=rc.per_device_batch_size, gradient_accumulation_steps=rc.grad_accum,
        max_completion_length=rc.max_completion_length, bf16=rc.bf16,
        activation_checkpointing=rc.gradient_checkpointing, use_vllm=rc.use_vllm, logging_steps=1,
        save_strategy="no", report_to="none", seed=seed,
    )
    if rc.use_vllm:
        kw["vllm_mode"] = rc.vllm_mode
    kw.update(rc.grpo_args)
    kw.update(overrides)
    return GRPOConfig(**kw)


def make_lora_config(rc):
    """peft LoraConfig (None when rc.use_lora is False)."""
    if not rc.use_lora:
        return None
    from peft import LoraConfig
    return LoraConfig(r=rc.lora_r, lora_alpha=rc.lora_alpha, lora_dropout=rc.lora_dropout,
                      target_modules=rc.lora_target_modules, task_type="CAUSAL_LM")


# --------------------------------------------------------------------------- runs

def run_sft(model, tokenizer, rows: list[dict], args, peft_config=None, callbacks=None):
    """Train with TRL SFTTrainer on the SFT view; returns the trainer (trainer.model is trained)."""
    from trl import SFTTrainer
    trainer = SFTTrainer(model=model, args=args, train_dataset=sft_dataset(rows), processing_class=tokenizer,
                         peft_config=peft_config, callbacks=callbacks)
    trainer.train()
    return trainer


def run_grpo(model, tokenizer, rows: list[dict], args, reward=None, peft_config=None, callbacks=None):
    """Train with TRL GRPOTrainer on the RL view with the GroupRank reward; returns the trainer.
    `trainer.state.log_history` holds per-step `reward` and the reward's own metrics
    (format shares, NDCG/Recall/JS, per-prompt reward spread)."""
    from trl import GRPOTrainer

    from grouprank.reranker.reward import GroupwiseReward
    reward = reward or GroupwiseReward(num_generations=args.num_generations)
    if args.beta and peft_config is None and not _is_peft(model):
        # TRL builds the KL reference model from `config._name_or_path`; an in-memory policy
        # (tiny model, or the SFT result) is saved first so the reference is this exact policy.
        from accelerate import PartialState
        state = PartialState()
        ref = Path(args.output_dir) / "reference_policy"
        if state.is_main_process:
            model.save_pretrained(ref)
            tokenizer.save_pretrained(ref)
        state.wait_for_everyone()
        model.config._name_or_path = str(ref)
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=rl_dataset(rows),
                          processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)
    trainer.train()
    return trainer


def _is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, PeftModel)


def step_rewards(trainer) -> list[float]:
    """Mean reward per logged GRPO step (TRL logs `reward` each logging step)."""
    return [float(h["reward"]) for h in trainer.state.log_history if "reward" in h]


def train_reranker(cfg, sft_rows: list[dict] | None, rl_rows: list[dict] | None, output_dir: str | Path,
                   *, tokenizer=None, model=None) -> dict:
    """The whole training stage: SFT (if sft_rows) then GRPO (if rl_rows).

    `cfg.reranker.base_model` None -> the tiny CPU policy (tokenizer trained on the examples'
    text, full fine-tune, no LoRA); otherwise the model is loaded with transformers and trained
    with LoRA (`use_lora`), generation through vLLM when `use_vllm`."""
    rc = cfg.reranker
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    peft_config = None
    if model is None:
        if rc.base_model is None:
            from grouprank.reranker.tiny import build_policy, train_tokenizer
            if tokenizer is None:
                texts = [m["content"] for r in (sft_rows or []) for m in r["messages"]]
                texts += [m["content"] for r in (rl_rows or []) for m in r["prompt"]]
                tokenizer = train_tokenizer(texts)
            model = build_policy(tokenizer, seed=cfg.seed)
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(rc.base_model)
            model = AutoModelForCausalLM.from_pretrained(rc.base_model, dtype="auto")
            peft_config = make_lora_config(rc)
    summary: dict[str, Any] = {"base_model": rc.base_model or "tiny-qwen2", "output_dir": str(out)}
    if sft_rows:
        sft = run_sft(model, tokenizer, sft_rows, make_sft_config(rc, out / "sft", cfg.seed), peft_config=peft_config)
        model = sft.model
        if peft_config is not None:  # merge the SFT adapter; GRPO gets a fresh one
            model = model.merge_and_unload()
        summary["sft_loss"] = [h["loss"] for h in sft.state.log_history if "loss" in h]
    if rl_rows:
        from grouprank.reranker.reward import GroupwiseReward
        reward = GroupwiseReward(rc.num_generations, gain=rc.reward_gain, rel_threshold=rc.reward_rel_threshold)
        grpo = run_grpo(model, tokenizer, rl_rows, make_grpo_config(rc, out / "grpo", cfg.seed), reward=reward,
                        peft_config=peft_config)
        model = grpo.model
        if peft_config is not None:
            model = model.merge_and_unload()
        summary["grpo_reward"] = step_rewards(grpo)
    final = out / "final"
    from accelerate import PartialState
    if PartialState().is_main_process:
        model.save_pretrained(final)
        tokenizer.save_pretrained(final)
    summary["model_path"] = str(final)
    return summary
