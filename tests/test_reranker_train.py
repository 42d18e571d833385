"""Training smoke: SFTTrainer then GRPOTrainer for 2 steps on the tiny Qwen2 policy with a
locally trained tokenizer (nothing from a hub), on groupwise examples from real DL19 qrels; the
reward function receives the flat batch and groups it by num_generations."""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def examples():
    from grouprank.collections import load_collection
    from grouprank.reranker.data import groups_from_qrels
    coll = load_collection("trec_dl19_passage")
    qids = sorted(set(coll.qrels["query_id"].to_pylist()))[:3]
    rl, sft = groups_from_qrels(coll, group_sizes=(3,), groups_per_query=2, max_doc_chars=60, query_ids=qids)
    return coll, rl, sft


def test_examples_from_qrels_have_the_table_shapes(examples):
    from data_schemas import RERANKER_RL, RERANKER_SFT
    from grouprank.prompts.groupwise import parse_output
    _, rl, sft = examples
    RERANKER_RL.from_records(rl)      # validates against the table definitions
    RERANKER_SFT.from_records(sft)
    for r, s in zip(rl, sft):
        assert s["messages"][:2] == r["prompt"] and s["messages"][2]["role"] == "assistant"
        p = parse_output(s["messages"][2]["content"], r["group_size"], strict=True)
        assert p.status == "ok"
        assert [round(10 * g / 3) for g in r["gold_grades"]] == [int(x) for x in p.scores]


def test_tiny_tokenizer_keeps_format_tokens_and_chat_template(examples):
    from grouprank.reranker.tiny import train_tokenizer
    _, rl, sft = examples
    tok = train_tokenizer([m["content"] for s in sft for m in s["messages"]], vocab_size=800)
    target = sft[0]["messages"][2]["content"]
    ids = tok(target, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == target            # tags survive TRL's decoding
    for t in ("<reason>", "</reason>", "<answer>", "</answer>"):
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1
    text = tok.apply_chat_template(sft[0]["messages"], tokenize=False)
    assert text.endswith(target + "<|im_end|>\n")
    assert tok.apply_chat_template(rl[0]["prompt"], tokenize=False, add_generation_prompt=True) \
        .endswith("<|im_start|>assistant\n")


def test_sft_then_grpo_two_steps_on_tiny_policy(examples, tmp_path):
    import torch
    torch.set_num_threads(1)
    from grouprank.config import RerankerConfig
    from grouprank.reranker.reward import GroupwiseReward
    from grouprank.reranker.tiny import build_policy, train_tokenizer
    from grouprank.reranker.train import make_grpo_config, make_sft_config, run_grpo, run_sft, step_rewards
    _, rl, sft = examples
    tok = train_tokenizer([m["content"] for s in sft for m in s["messages"]], vocab_size=800)
    model = build_policy(tok, hidden_size=32, layers=1, heads=2, kv_heads=1, intermediate_size=64)
    rc = RerankerConfig(sft_epochs=1, sft_lr=1e-3, per_device_batch_size=4, sft_max_length=1024, grpo_steps=2,
                        grpo_lr=1e-4, num_generations=4, beta_kl=0.001, max_completion_length=12, lora=None)
    s = run_sft(model, tok, sft, make_sft_config(rc, tmp_path / "sft", logging_steps=1, max_steps=2))
    assert [h["loss"] for h in s.state.log_history if "loss" in h]

    calls = []
    reward = GroupwiseReward(num_generations=4)

    class Spy:
        __name__ = "groupwise_reward"

        def __call__(self, completions, gold_grades, gold_scores, **kw):
            calls.append((len(completions), [tuple(g) for g in gold_grades], kw.get("prompts")))
            return reward(completions, gold_grades, gold_scores, **kw)

    args = make_grpo_config(rc, tmp_path / "grpo", per_device_train_batch_size=8, logging_steps=1)
    g = run_grpo(s.model, tok, rl, args, reward=Spy())
    assert len(step_rewards(g)) == 2
    assert len(calls) == 2
    for n, grades, prompts in calls:
        assert n == 8                                   # 2 prompts x 4 generations, flat
        assert grades[0:4] == [grades[0]] * 4 and grades[4:8] == [grades[4]] * 4
        assert prompts[0:4] == [prompts[0]] * 4
    assert "reward/zero_spread_share" in reward.last_stats and "format/ok" in reward.last_stats
    logged = [h for h in g.state.log_history if "reward" in h]
    assert any(k.endswith("format/ok") for k in logged[-1])   # the reward's own metrics reach the trainer log
    assert (tmp_path / "grpo" / "reference_policy" / "config.json").exists()  # KL reference = SFT policy
