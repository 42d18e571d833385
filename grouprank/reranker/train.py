"""SFT warm start then GRPO, with TRL (SFTTrainer, GRPOTrainer).

Data (tables from the dataset-building stage, or `reranker.data.groups_from_qrels`):

* SFT view: column `messages` (system + user + assistant target). It is fed to `SFTTrainer` as a
  conversational prompt–completion dataset (prompt = system+user, completion = the assistant
  turn), so the loss covers only the target, whatever the model's chat template.
* RL view: column `prompt` (system + user messages, TRL conversational format) plus the gold
  columns `gold_grades`, `gold_scores`, which TRL hands to the reward function per completion.

Real GPU runs: `grouprank train-reranker --config configs/reranker/qwen2.5-7b-grouprank-train.yaml ...`
(base model + LoRA via peft, vLLM generation via `reranker.grpo_args`); see configs/reranker/README.md.
CPU default: SmolLM2-135M-Instruct from the bundled GGUF (`grouprank.reranker.policy`,
preset `presets/smollm2-cpu.yaml`); measured by `bench/grpo_cpu.py` on SciFact.

Heavy imports (torch, transformers, trl, peft, datasets) happen inside the functions.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from grouprank.errors import UserError
from grouprank.model_lock import exclusive

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

    from grouprank.console import on_terminal
    kw: dict[str, Any] = dict(
        output_dir=str(output_dir), num_train_epochs=rc.sft_epochs, learning_rate=rc.sft_lr,
        per_device_train_batch_size=rc.per_device_batch_size, gradient_accumulation_steps=rc.grad_accum,
        max_length=rc.sft_max_length, bf16=rc.bf16, activation_checkpointing=rc.gradient_checkpointing,
        completion_only_loss=True, logging_steps=10, save_strategy="no", report_to="none", seed=seed,
        lr_scheduler_type="cosine", warmup_steps=0.03, disable_tqdm=not on_terminal(),  # a bar only on a terminal
    )
    kw.update(_cpu_bf16(rc))
    kw.update(rc.sft_args)
    kw["logging_nan_inf_filter"] = False  # a NaN/inf loss is logged as such (check_finite_log fails on it)
    kw.update(overrides)
    return SFTConfig(**kw)


def _cpu_bf16(rc) -> dict:
    """bf16 without a GPU: transformers wants `use_cpu` said (autocast on the CPU; AMX where present)."""
    if not rc.bf16:
        return {}
    import torch
    return {} if torch.cuda.is_available() else {"use_cpu": True}


def make_grpo_config(rc, output_dir: str | Path, seed: int = 13, **overrides):
    """`trl.GRPOConfig` from a RerankerConfig (+ rc.grpo_args, + overrides).
    Paper: 8 rollouts, KL 0.001, lr 1e-5, temperature 1.0 (LoRA r=32 via `make_lora_config`)."""
    from trl import GRPOConfig

    from grouprank.console import on_terminal
    kw: dict[str, Any] = dict(
        output_dir=str(output_dir), max_steps=rc.grpo_steps, learning_rate=rc.grpo_lr,
        num_generations=rc.num_generations, beta=rc.beta_kl, temperature=rc.temperature, top_p=1.0,
        per_device_train_batch_size=rc.per_device_batch_size, gradient_accumulation_steps=rc.grad_accum,
        max_completion_length=rc.max_completion_length, bf16=rc.bf16,
        activation_checkpointing=rc.gradient_checkpointing, use_vllm=False, logging_steps=1,
        save_strategy="no", report_to="none", seed=seed, disable_tqdm=not on_terminal(),
    )  # vLLM generation (GPU runs): grpo_args use_vllm / vllm_mode, TRL's own names
    kw.update(_cpu_bf16(rc))
    kw.update(rc.grpo_args)
    kw["logging_nan_inf_filter"] = False  # a NaN/inf loss is logged as such (check_finite_log fails on it)
    kw.update(overrides)
    return GRPOConfig(**kw)


def make_lora_config(rc, num_layers: int | None = None):
    """peft LoraConfig (None when rc.lora is None). With `rc.train_top_layers` and the
    model's `num_layers`, adapters go on the top layers only."""
    lo = rc.lora
    if lo is None:
        return None
    from peft import LoraConfig
    kw: dict[str, Any] = {}
    targets = lo.target_modules
    if rc.train_top_layers is not None and num_layers:
        kw["layers_to_transform"] = list(range(max(0, num_layers - rc.train_top_layers), num_layers))
        if targets == "all-linear":  # peft takes layers_to_transform only with a list of module names
            targets = list(DECODER_LINEAR)
    return LoraConfig(r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout,
                      target_modules=targets, task_type="CAUSAL_LM", **kw)


#: the linear layers of a Llama/Qwen/SmolLM decoder layer
DECODER_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# --------------------------------------------------------------------------- runs

def run_sft(model, tokenizer, rows: list[dict], args, peft_config=None, callbacks=None, resume: Path | None = None):
    """Train with TRL SFTTrainer on the SFT view; returns the trainer (trainer.model is trained).
    `resume`: a checkpoint of this same training to continue from."""
    from trl import SFTTrainer

    from grouprank.trainer_support import progress_callback, train
    trainer = SFTTrainer(model=model, args=args, train_dataset=sft_dataset(rows), processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[progress_callback("reranker SFT"), *(callbacks or [])])
    train(trainer, resume)
    return trainer


def run_grpo(model, tokenizer, rows: list[dict], args, reward=None, peft_config=None, callbacks=None,
             resume: Path | None = None):
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
    from grouprank.trainer_support import progress_callback, train
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=rl_dataset(rows),
                          processing_class=tokenizer, peft_config=peft_config,
                          callbacks=[progress_callback("reranker GRPO"), *(callbacks or [])])
    train(trainer, resume)
    return trainer


def checkpointing(rc, phase: str, scratch: Path, *parts) -> tuple[dict, Path | None]:
    """Trainer arguments that save a checkpoint every `rc.checkpoint_steps` steps into `scratch`, and
    the checkpoint to resume from: the newest one of this same training (`parts`: examples, base
    model, seed, settings), so a killed stage continues where it stopped."""
    if not rc.checkpoint_steps:
        return {}, None
    from grouprank.trainer_support import fingerprint, open_checkpoints
    resume = open_checkpoints(scratch, fingerprint(phase, rc.model_dump(mode="json"), *parts), f"reranker {phase}")
    return {"save_strategy": "steps", "save_steps": int(rc.checkpoint_steps), "save_total_limit": 1}, resume


def _is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, PeftModel)


def trainable_snapshot(model) -> dict:
    """Copies of the trainable parameters (to tell afterwards whether training moved them)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def weights_changed(model, before: dict | None) -> bool:
    """Did training change the policy? Against a `trainable_snapshot`, or, for a fresh LoRA
    adapter (`before` None), whether any lora_B (initialised to zero) moved."""
    import torch
    params = dict(model.named_parameters())
    if before is None:
        return any(bool(p.detach().abs().sum() > 0) for n, p in params.items() if "lora_B" in n)
    return any(n in params and not torch.equal(params[n].detach(), v) for n, v in before.items())


class TrainingHealthError(UserError):
    """A training run that finished but is not healthy (non-finite reward/loss, weights unchanged)."""


#: logged metrics that must stay finite, per phase (TRL/transformers `log_history` keys)
HEALTH_KEYS = {"sft": ("loss", "train_loss"), "grpo": ("reward", "loss", "train_loss")}


def nonfinite_entries(log_history: list[dict], keys: tuple[str, ...]) -> list[tuple[Any, str, Any]]:
    """(step, key, value) for every `log_history` entry whose `keys` value is NaN, +-inf or not a number."""
    import math
    bad = []
    for i, h in enumerate(log_history or []):
        for k in keys:
            if k not in h:
                continue
            v = h[k]
            try:
                ok = math.isfinite(float(v))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                bad.append((h.get("step", i), k, v))
    return bad


def check_finite_log(log_history: list[dict], phase: str) -> None:
    """Raise a clear `TrainingHealthError` when a logged SFT loss or GRPO reward/loss is non-finite.
    The trainer configs set `logging_nan_inf_filter=False`, so a NaN step is logged as NaN instead
    of being replaced by the running mean."""
    bad = nonfinite_entries(log_history, HEALTH_KEYS[phase])
    if bad:
        shown = ", ".join(f"step {s}: {k}={v}" for s, k, v in bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
        what = "reward/loss" if phase == "grpo" else "loss"
        raise TrainingHealthError(
            f"train_reranker: {phase.upper()} logged a non-finite {what} ({shown}): training diverged, the "
            "weights are not trustworthy; lower the learning rate, check bf16 on this hardware, or check "
            "the examples")


def step_rewards(trainer) -> list[float]:
    """Mean reward per logged GRPO step (TRL logs `reward` each logging step)."""
    return [float(h["reward"]) for h in trainer.state.log_history if "reward" in h]


@exclusive
def prompt_token_lengths(tokenizer, rl_rows: list[dict], model, max_completion_length: int) -> dict:
    """The RL prompts' length in the policy's tokens (chat template applied): median, p90, max, and how
    many leave less than `max_completion_length` of the model's context window (TRL's GRPOConfig has no
    prompt cap: such a prompt is not cut, its completion runs past the window). Warns when any do."""
    lens = []
    for r in rl_rows:
        try:
            text = tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - a tokenizer without a chat template (the tiny test policy)
            text = "\n".join(str(m.get("content") or "") for m in r["prompt"])
        lens.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    if not lens:
        return {}
    lens.sort()
    window = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    over = sum(n + max_completion_length > window for n in lens) if window else 0
    out = {"rl_prompt_tokens_median": lens[len(lens) // 2], "rl_prompt_tokens_p90": lens[min(len(lens) - 1,
           int(0.9 * len(lens)))], "rl_prompt_tokens_max": lens[-1], "rl_prompts_over_context": over}
    if window:
        out["policy_context_tokens"] = int(window)
    if over:
        log.warning("%d of %d RL prompts leave less than max_completion_length (%d) of the policy's %d-token "
                    "window (TRL's GRPOConfig does not cut prompts); shorten documents with "
                    "reranker.train_doc_chars", over, len(lens), max_completion_length, window)
    return out


def train_reranker(cfg, sft_rows: list[dict] | None, rl_rows: list[dict] | None, output_dir: str | Path,
                   *, tokenizer=None, model=None, callbacks: list | None = None) -> dict:
    """The whole training stage: SFT (if sft_rows) then GRPO (if rl_rows).

    The policy is `cfg.reranker.base_model` (`grouprank.reranker.policy`): "smollm2" (the bundled
    GGUF, CPU default), "tiny" (random tiny Qwen2 with a tokenizer trained on the examples' text;
    unit tests), a .gguf file, or a model folder / HF id. Trained with LoRA unless `lora` is null
    (the CPU presets), only the top `train_top_layers` layers when set, generation through vLLM when
    `grpo_args` says `use_vllm`."""
    from grouprank.reranker.policy import freeze_below, load_policy, resolve
    rc = cfg.reranker
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    peft_config = None
    src = resolve(rc.base_model)
    if model is None:
        if src.is_tiny:
            from grouprank.reranker.tiny import build_policy, train_tokenizer
            if tokenizer is None:
                texts = [m["content"] for r in (sft_rows or []) for m in r["messages"]]
                texts += [m["content"] for r in (rl_rows or []) for m in r["prompt"]]
                tokenizer = train_tokenizer(texts)
            model = build_policy(tokenizer, seed=cfg.seed)
        else:
            import torch
            torch.manual_seed(cfg.seed)
            model, tok = load_policy(src)
            tokenizer = tokenizer or tok
            peft_config = make_lora_config(rc, getattr(model.config, "num_hidden_layers", None))
    summary: dict[str, Any] = {"base_model": src.name if not src.is_tiny else "tiny-qwen2", "output_dir": str(out)}
    if peft_config is None:
        summary.update(freeze_below(model, rc.train_top_layers))
    else:
        summary["params"] = sum(p.numel() for p in model.parameters())
    import time
    from grouprank.trainer_support import checkpoint_step
    what = (summary["base_model"], cfg.seed, sft_rows or [])
    if sft_rows:
        t = time.perf_counter()
        save, resume = checkpointing(rc, "sft", out / "sft", *what)
        summary["sft_resumed_from"] = checkpoint_step(resume)
        sft = run_sft(model, tokenizer, sft_rows, make_sft_config(rc, out / "sft", cfg.seed, **save),
                      peft_config=peft_config, resume=resume, callbacks=callbacks)
        check_finite_log(sft.state.log_history, "sft")  # fail before GRPO spends anything on a diverged policy
        model = sft.model
        if peft_config is not None:  # merge the SFT adapter; GRPO gets a fresh one
            model = model.merge_and_unload()
        summary["sft_loss"] = [h["loss"] for h in sft.state.log_history if "loss" in h]
        summary["sft_s"] = round(time.perf_counter() - t, 2)
    if rl_rows:
        from grouprank.reranker.reward import GroupwiseReward
        summary.update(prompt_token_lengths(tokenizer, rl_rows, model, rc.max_completion_length))
        t = time.perf_counter()
        before = None if peft_config is not None else trainable_snapshot(model)
        reward = GroupwiseReward(rc.num_generations, gain=rc.reward_gain, rel_threshold=rc.reward_rel_threshold)
        save, resume = checkpointing(rc, "grpo", out / "grpo", *what, rl_rows)
        summary["grpo_resumed_from"] = checkpoint_step(resume)
        grpo = run_grpo(model, tokenizer, rl_rows, make_grpo_config(rc, out / "grpo", cfg.seed, **save), reward=reward,
                        peft_config=peft_config, resume=resume, callbacks=callbacks)
        check_finite_log(grpo.state.log_history, "grpo")
        model = grpo.model
        summary["grpo_weights_changed"] = weights_changed(model, before)
        if peft_config is not None:
            model = model.merge_and_unload()
        summary["grpo_reward"] = step_rewards(grpo)
        summary["grpo_s"] = round(time.perf_counter() - t, 2)
    final = out / "final"
    from accelerate import PartialState
    if PartialState().is_main_process:
        model.save_pretrained(final)
        tokenizer.save_pretrained(final)
        from grouprank.trainer_support import drop_checkpoints
        for phase in ("sft", "grpo"):  # the model is saved: its checkpoints are no longer needed
            drop_checkpoints(out / phase)
    summary["model_path"] = str(final)
    return summary
