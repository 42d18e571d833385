"""A tiny CPU policy for proving the SFT → GRPO loop: nothing comes from a hub.

* `train_tokenizer(texts)`: byte-level BPE (`tokenizers`) trained on the given texts (collection
  text + the prompt-format strings; no word-boundary pre-split, so the fixed system prompt and
  the answer skeleton compress to a few tokens and CPU sequences stay short), wrapped as a transformers fast tokenizer with a ChatML chat
  template (`{% generation %}` markers around the assistant turn, `<|im_end|>` inside them, so
  TRL's assistant-only loss trains the stop token). The format tags `<reason>`, `</reason>`,
  `<answer>`, `</answer>` are ordinary (non-special) added tokens: one token each, and kept when
  TRL decodes completions with `skip_special_tokens=True`.
* `build_policy(tokenizer)`: a randomly initialised Qwen2ForCausalLM from a `Qwen2Config`.
"""
from __future__ import annotations

from collections.abc import Iterable

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
FORMAT_TOKENS = ["<reason>", "</reason>", "<answer>", "</answer>"]

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def format_corpus() -> list[str]:
    """The prompt-format strings the tokenizer must know well (repeated so BPE merges them)."""
    from grouprank.prompts.groupwise import SYSTEM_PROMPT, build_user_prompt, render_target
    out = [SYSTEM_PROMPT] * 300
    for n in range(1, 21):
        out.append(build_user_prompt("query", [f"document {i}" for i in range(n)]))
        for s in range(11):
            out.append(render_target(f"Most useful: [{(s % n) + 1}]. Not useful: [{n}].",
                                     [(s + i) % 11 for i in range(n)]))
    return out


def train_tokenizer(texts: Iterable[str], vocab_size: int = 6000):
    """Byte-level BPE trained locally; returns a `PreTrainedTokenizerFast` with a chat template."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # use_regex=False: no split at word boundaries, so frequent multi-word strings (the fixed
    # system prompt, the answer skeleton `, "[2]": `) become single tokens: short sequences on CPU.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    texts = list(texts) + format_corpus()
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in FORMAT_TOKENS])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token=None)
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def build_policy(tokenizer, *, hidden_size: int = 128, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                 intermediate_size: int = 384, max_positions: int = 4096, seed: int = 0):
    """Tiny Qwen2 causal LM from a config (random init, float32)."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(cfg)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    return model
