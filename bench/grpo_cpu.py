"""CPU proof that the groupwise SFT -> GRPO loop learns.

A tiny Qwen2 policy built from a transformers config (random init) and a byte-level BPE tokenizer
trained here on the collection text + the prompt-format strings (nothing from a hub) is
SFT-warmed with TRL SFTTrainer on groupwise examples built from a real collection's human
graded qrels (TREC DL19 passage, grades 0-3 -> scores 0/3/7/10), then trained with TRL
GRPOTrainer and the GroupRank reward. Queries are split: train queries give the SFT and RL
groups, held-out queries give the groups on which format validity is measured.

    .venv/bin/python bench/grpo_cpu.py --out bench_out/grpo_cpu.json

Prints and writes JSON: format_valid_after_sft (share of held-out groups whose greedy output is
well formed, strict reward parser), format_valid_lenient, reward_first10 / reward_last10 (mean
GRPO reward over the first / last 10 steps), steps, wall_s (+ per-phase timings and settings).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import setup, write_report  # noqa: E402  (bench/_common.py)

setup("grpo_cpu")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--collection", default="trec_dl19_passage")
    ap.add_argument("--group-size", type=int, default=5)
    ap.add_argument("--doc-chars", type=int, default=120)
    ap.add_argument("--heldout-queries", type=int, default=8)
    ap.add_argument("--sft-groups-per-query", type=int, default=16)
    ap.add_argument("--sft-epochs", type=float, default=2.0)
    ap.add_argument("--sft-lr", type=float, default=2e-3)
    ap.add_argument("--grpo-steps", type=int, default=60)
    ap.add_argument("--grpo-lr", type=float, default=2e-4)
    ap.add_argument("--num-generations", type=int, default=8)
    ap.add_argument("--prompts-per-step", type=int, default=2)
    ap.add_argument("--beta", type=float, default=0.001)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: the dev machines are shared; more threads thrash under load)")
    ap.add_argument("--work-dir", default=None, help="checkpoints etc. (default: a temp dir)")
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()

    from grouprank.collections import load_collection
    from grouprank.config import RerankerConfig
    from grouprank.reranker.data import groups_from_qrels
    from grouprank.reranker.inference import GenRequest, TransformersBackend
    from grouprank.prompts.groupwise import TEMPLATE_VERSION, parse_output
    from grouprank.reranker.reward import GroupwiseReward, reward_one
    from grouprank.reranker.tiny import build_policy, train_tokenizer
    from grouprank.reranker.train import make_grpo_config, make_sft_config, run_grpo, run_sft, step_rewards

    t0 = time.time()
    coll = load_collection(args.collection)
    judged = sorted(set(coll.qrels["query_id"].to_pylist()))
    import random
    rng = random.Random(args.seed)
    rng.shuffle(judged)
    held, train_q = judged[:args.heldout_queries], judged[args.heldout_queries:]
    gs = (args.group_size,)
    _, sft_rows = groups_from_qrels(coll, group_sizes=gs, groups_per_query=args.sft_groups_per_query,
                                    max_doc_chars=args.doc_chars, query_ids=train_q, seed=args.seed, prefix="sft")
    rl_rows, _ = groups_from_qrels(coll, group_sizes=gs, groups_per_query=8, max_doc_chars=args.doc_chars,
                                   query_ids=train_q, seed=args.seed + 1, prefix="rl")
    held_rl, _ = groups_from_qrels(coll, group_sizes=gs, groups_per_query=4, max_doc_chars=args.doc_chars,
                                   query_ids=held, seed=args.seed + 2, prefix="ho")
    qids = set(train_q) | set(held)
    texts = [t for q, t in zip(coll.queries["query_id"].to_pylist(), coll.queries["text"].to_pylist()) if q in qids]
    judged_docs = set(coll.qrels["doc_id"].to_pylist())
    texts += [t[:args.doc_chars] for d, t in zip(coll.documents["doc_id"].to_pylist(),
                                                  coll.documents["text"].to_pylist()) if d in judged_docs]
    tok = train_tokenizer(texts, vocab_size=6000)
    model = build_policy(tok, hidden_size=args.hidden, layers=args.layers, intermediate_size=3 * args.hidden,
                         seed=args.seed)
    n_prompt = len(tok(tok.apply_chat_template(held_rl[0]["prompt"], tokenize=False, add_generation_prompt=True),
                       add_special_tokens=False)["input_ids"])
    t_data = time.time() - t0

    import tempfile
    out_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="grpo_cpu_"))
    rc = RerankerConfig(sft_epochs=args.sft_epochs, sft_lr=args.sft_lr, per_device_batch_size=8, sft_max_length=2048,
                        grpo_steps=args.grpo_steps, grpo_lr=args.grpo_lr, num_generations=args.num_generations,
                        beta_kl=args.beta, temperature=1.0, max_completion_length=48, use_lora=False)
    t1 = time.time()
    sft = run_sft(model, tok, sft_rows, make_sft_config(rc, out_dir / "sft", args.seed, logging_steps=20, warmup_steps=10))
    model = sft.model
    t_sft = time.time() - t1
    sft_losses = [h["loss"] for h in sft.state.log_history if "loss" in h]

    def evaluate(model, rows):
        be = TransformersBackend(model, tok, max_new_tokens=48, batch_size=16)
        gens = be.generate([GenRequest(r["prompt"], TEMPLATE_VERSION) for r in rows])
        strict = [parse_output(g.text, len(r["gold_grades"]), strict=True).status for g, r in zip(gens, rows)]
        lenient = [parse_output(g.text, len(r["gold_grades"])).status for g, r in zip(gens, rows)]
        rew = [reward_one(g.text, r["gold_grades"], r["gold_scores"]).reward for g, r in zip(gens, rows)]
        return {"format_valid": sum(s == "ok" for s in strict) / len(rows),
                "format_valid_lenient": sum(s == "ok" for s in lenient) / len(rows),
                "mean_reward_greedy": sum(rew) / len(rew), "example": gens[0].text}

    t2 = time.time()
    ev_sft = evaluate(model, held_rl)
    t_eval = time.time() - t2

    reward = GroupwiseReward(num_generations=args.num_generations)
    grpo_args = make_grpo_config(rc, out_dir / "grpo", args.seed, per_device_train_batch_size=args.prompts_per_step *
                                 args.num_generations, logging_steps=1, warmup_steps=0, lr_scheduler_type="constant")
    t3 = time.time()
    grpo = run_grpo(model, tok, rl_rows, grpo_args, reward=reward)
    t_grpo = time.time() - t3
    rewards = step_rewards(grpo)
    fmt_ok = [h.get("groupwise_reward/format/ok", h.get("format/ok")) for h in grpo.state.log_history if "reward" in h]
    ev_grpo = evaluate(grpo.model, held_rl)

    first10 = sum(rewards[:10]) / max(1, len(rewards[:10]))
    last10 = sum(rewards[-10:]) / max(1, len(rewards[-10:]))
    res = {
        "collection": args.collection, "train_queries": len(train_q), "heldout_queries": len(held),
        "sft_examples": len(sft_rows), "rl_examples": len(rl_rows), "heldout_groups": len(held_rl),
        "group_size": args.group_size, "doc_chars": args.doc_chars, "prompt_tokens": n_prompt,
        "vocab": len(tok), "params": sum(p.numel() for p in model.parameters()),
        "sft_loss_first": sft_losses[0] if sft_losses else None, "sft_loss_last": sft_losses[-1] if sft_losses else None,
        "format_valid_after_sft": ev_sft["format_valid"], "format_valid_lenient_after_sft": ev_sft["format_valid_lenient"],
        "heldout_greedy_reward_after_sft": ev_sft["mean_reward_greedy"],
        "format_valid_after_grpo": ev_grpo["format_valid"],
        "heldout_greedy_reward_after_grpo": ev_grpo["mean_reward_greedy"],
        "reward_first10": first10, "reward_last10": last10, "steps": len(rewards),
        "reward_per_step": rewards, "format_ok_per_step": fmt_ok,
        "num_generations": args.num_generations, "prompts_per_step": args.prompts_per_step,
        "grpo_lr": args.grpo_lr, "beta": args.beta,
        "wall_s": time.time() - t0, "data_s": t_data, "sft_s": t_sft, "eval_s": t_eval, "grpo_s": t_grpo,
        "example_after_sft": ev_sft["example"], "example_after_grpo": ev_grpo["example"],
    }
    write_report(args.out, res)
    for k in ("format_valid_after_sft", "format_valid_after_grpo", "heldout_greedy_reward_after_sft",
              "heldout_greedy_reward_after_grpo", "reward_first10", "reward_last10", "steps", "wall_s",
              "sft_s", "grpo_s"):
        v = res[k]
        print(f"{k:36s} {v:.4f}" if isinstance(v, float) else f"{k:36s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
