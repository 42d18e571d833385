"""The `train_reranker` stage: tiny CPU policy, SFT then GRPO (TRL) on example tables, held-out
queries kept out of training and scored after it."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from grouprank.collections import load_collection
from grouprank.config import RunConfig
from grouprank.prompts.groupwise import parse_output
from grouprank.reranker.data import groups_from_qrels
from grouprank.reranker.stage import split_queries
from grouprank.stage import StageContext


@pytest.fixture(scope="module")
def tables():
    coll = load_collection("cranfield")
    qids = sorted(set(coll.qrels["query_id"].to_pylist()))[:10]
    rl, sft = groups_from_qrels(coll, group_sizes=(4, 12), groups_per_query=2, max_doc_chars=400,
                                query_ids=qids, seed=3)
    return pa.Table.from_pylist(sft), pa.Table.from_pylist(rl), rl, sft


def _ctx(cfg) -> StageContext:
    out = cfg.work_path / "train_reranker"
    out.mkdir(parents=True, exist_ok=True)
    return StageContext(out_dir=out, work_dir=cfg.work_path)


def test_with_doc_chars_keeps_the_prompt_format():
    from grouprank.prompts.groupwise import build_messages, with_doc_chars
    msgs = build_messages("wing flutter", ["a " * 300, "short doc", "b" * 50], max_doc_chars=3000)
    cut = with_doc_chars(msgs, 20)
    assert cut == build_messages("wing flutter", ["a " * 300, "short doc", "b" * 50], max_doc_chars=20)
    assert cut[0] == msgs[0]
    user = cut[1]["content"]
    assert user.count("<document id=") == 3 and "short doc" in user and "b" * 20 in user and "b" * 21 not in user
    assert len(user) < len(msgs[1]["content"]) - 500
    # the answer skeleton (keys [1]..[3]) is unchanged
    assert user.split("</document>")[-1] == msgs[1]["content"].split("</document>")[-1]
    # an SFT conversation keeps its answer; a user turn of another format is refused, not cut by pattern
    answer = {"role": "assistant", "content": "<reason>r</reason>\n<answer>{}</answer>"}
    assert with_doc_chars(msgs + [answer], 20) == cut + [answer]
    odd = [msgs[0], {"role": "user", "content": msgs[1]["content"].replace("Score all", "Rank all")}]
    with pytest.raises(ValueError, match="not a groupwise@1 user prompt"):
        with_doc_chars(odd, 20)


def test_split_queries_is_seeded_and_never_takes_all():
    rows = [{"query_id": str(i)} for i in range(10)]
    a, b = split_queries(rows, 0.2, 1), split_queries(rows, 0.2, 1)
    assert a == b and len(a) == 2
    assert len(split_queries(rows[:2], 0.9, 1)) == 1 and split_queries(rows, 0.0, 1) == set()


def test_train_reranker_stage_fails_when_grpo_changes_nothing(tmp_path, tables):
    """A barely warmed-up tiny policy writes no well-tagged answer: every rollout gets -0.5, every
    advantage is 0 and GRPO cannot move the weights. The stage says so instead of succeeding."""
    from grouprank.errors import UserError
    from grouprank.reranker.stage import run
    sft_table, rl_table, rl, sft = tables
    cfg = RunConfig.load(None, {"work_dir": str(tmp_path / "work"), "reranker.base_model": "tiny",
                                "reranker.max_train_examples": 4, "reranker.sft_epochs": 1.0,
                                "reranker.sft_lr": 1e-6, "reranker.grpo_steps": 1, "reranker.num_generations": 2,
                                "reranker.per_device_batch_size": 4, "reranker.max_completion_length": 8})
    with pytest.raises(UserError, match=r"left the policy's weights unchanged \(rewards \[-0.5\]\)"):
        run({"reranker_sft": sft_table, "reranker_rl": rl_table}, cfg, _ctx(cfg))


def test_train_reranker_stage_tiny_policy(tmp_path, tables, monkeypatch):
    import torch

    from grouprank.reranker import train as train_mod
    from grouprank.reranker.stage import run
    sft_table, rl_table, rl, sft = tables
    # a spy on GRPO: every parameter before and after it, to check the stage's grpo_weights_changed
    # against (before: `isinstance(..., bool)`, which any answer passed)
    seen = {}
    real_run_grpo = train_mod.run_grpo

    def spying_run_grpo(model, *a, **kw):
        seen["before"] = {n: p.detach().clone() for n, p in model.named_parameters()}
        trainer = real_run_grpo(model, *a, **kw)
        seen["changed"] = any(not torch.equal(p.detach(), seen["before"][n])
                              for n, p in trainer.model.named_parameters() if n in seen["before"])
        return trainer
    monkeypatch.setattr(train_mod, "run_grpo", spying_run_grpo)
    cfg = RunConfig.load(None, {"work_dir": str(tmp_path / "work"), "reranker.heldout_fraction": 0.2,
                                "reranker.base_model": "tiny", "reranker.require_grpo_update": False,
                                "reranker.train_max_group_size": 5, "reranker.max_train_examples": 6,
                                "reranker.sft_epochs": 1.0, "reranker.grpo_steps": 2,
                                "reranker.num_generations": 2, "reranker.per_device_batch_size": 4,
                                "reranker.max_completion_length": 24})
    res = run({"reranker_sft": sft_table, "reranker_rl": rl_table}, cfg, _ctx(cfg))
    st = res.stats
    assert st["policy"] == "tiny-cpu-proof"
    assert st["heldout_queries"] == 2 and st["heldout_rl_rows"] == 4
    # groups of 12 are over the tiny limit: counted, not trained
    n_big_sft = sum(r["group_size"] > 5 for r in sft)
    assert 0 < st["sft_rows_over_max_group"] <= n_big_sft
    assert st["sft_rows_trained"] == 6 and st["rl_rows_trained"] == 6
    assert st["grpo_steps"] == 2 and st["sft_loss_first"] > 0 and st["preset"] == "tiny-cpu"
    assert "changed" in seen and st["grpo_weights_changed"] is seen["changed"]
    model = Path(res.outputs["reranker_model"])
    assert (model / "config.json").exists() and (model / "tokenizer.json").exists()
    summary = json.loads(Path(res.outputs["reranker_summary"]).read_text())
    assert summary["reranker_config"]["grpo_steps"] == 2 and summary["reranker_config"]["lora"] is None
    # the held-out numbers are the strict parser's and the reward's on what the model generated
    gens = summary["heldout"]["heldout_generations"]
    assert len(gens) == st["heldout_examples"] >= 1
    assert {g["query_id"] for g in gens} <= {r["query_id"] for r in rl}
    strict = [parse_output(g["text"], len(g["gold_grades"]), strict=True).status == "ok" for g in gens]
    assert st["heldout_format_valid"] == round(sum(strict) / len(gens), 4)
    from grouprank.reranker.reward import reward_one
    rewards = [reward_one(g["text"], g["gold_grades"], g["gold_scores"]).reward for g in gens]
    assert st["heldout_greedy_reward"] == round(sum(rewards) / len(gens), 4)
    assert summary["heldout"]["heldout_example_output"] == gens[0]["text"][:500]
    # beside it, the same reward for the all-0 answer and for the gold scores (the oracle), same rows
    from grouprank.reranker.reward import score_reward
    zero = [score_reward([0.0] * len(g["gold_grades"]), g["gold_grades"], g["gold_scores"]).reward for g in gens]
    best = [score_reward(g["gold_scores"], g["gold_grades"], g["gold_scores"]).reward for g in gens]
    assert st["heldout_reward_constant_0"] == round(sum(zero) / len(gens), 4)
    assert st["heldout_reward_oracle"] == round(sum(best) / len(gens), 4) > st["heldout_reward_constant_0"]
    # the RL prompts' length in the trained policy's own tokens, next to its context window
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model)
    assert st["rl_prompt_tokens_max"] >= st["rl_prompt_tokens_p90"] >= st["rl_prompt_tokens_median"] > 10
    assert st["policy_context_tokens"] > 0 and st["rl_prompts_over_context"] >= 0
    assert st["rl_prompt_tokens_max"] <= max(len(tok("\n".join(m["content"] for m in r["prompt"]),
                                                    add_special_tokens=False)["input_ids"]) for r in rl) + 64


def test_train_reranker_stage_can_be_switched_off(tmp_path, tables):
    from grouprank.reranker.stage import run
    cfg = RunConfig.load(None, {"work_dir": str(tmp_path), "reranker.train": False})
    res = run({"reranker_sft": tables[0], "reranker_rl": tables[1]}, cfg, _ctx(cfg))
    assert res.stats == {"skipped": 1} and "reranker_model" not in res.outputs


def test_rl_prompt_token_lengths_and_the_context_window(caplog):
    """The RL prompts' length in the policy's tokens, and the prompts that leave less than the
    completion budget of the context window counted and warned about (TRL does not cut prompts)."""
    import logging
    from types import SimpleNamespace

    from grouprank.reranker.train import prompt_token_lengths

    class Tok:
        def apply_chat_template(self, msgs, tokenize, add_generation_prompt):
            return " ".join(m["content"] for m in msgs) + " <assistant>"

        def __call__(self, text, add_special_tokens):
            return {"input_ids": text.split()}

    rows = [{"prompt": [{"role": "user", "content": " ".join(["w"] * n)}]} for n in (3, 5, 7, 20)]
    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=12))
    caplog.set_level(logging.WARNING, logger="grouprank.reranker.train")
    out = prompt_token_lengths(Tok(), rows, model, max_completion_length=4)
    # 4, 6, 8, 21 tokens (the template adds one); over: 8 + 4 = 12 is not > 12, 21 + 4 is
    assert out == {"rl_prompt_tokens_median": 8, "rl_prompt_tokens_p90": 21, "rl_prompt_tokens_max": 21,
                   "rl_prompts_over_context": 1, "policy_context_tokens": 12}
    assert any("1 of 4 RL prompts leave less than max_completion_length (4)" in r.getMessage() for r in caplog.records)
