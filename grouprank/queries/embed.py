"""Query embeddings for dedup and the leakage guard, memoised per text.

`TextEmbedder(encoder)` wraps any object with `encode_queries(texts) -> np.ndarray` (normalised
rows; e.g. `grouprank.first_stage.dense.DenseEncoder`) and remembers every text it has encoded, so
dedup and the leakage guard (and repeated runs in one process) never encode a text twice.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


class TextEmbedder:
    """Memoising wrapper; the memo is cleared when it exceeds `max_cached` texts."""

    def __init__(self, encoder, max_cached: int = 200_000):
        self.encoder = encoder
        self.max_cached = max_cached
        self._cache: dict[str, np.ndarray] = {}
        self.n_encoded = 0

    @property
    def model_id(self) -> str:
        return str(getattr(self.encoder, "model_id", type(self.encoder).__name__))

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if todo:
            if len(self._cache) + len(todo) > self.max_cached:
                self._cache.clear()
            emb = np.asarray(self.encoder.encode_queries(todo), dtype=np.float32)
            if emb.shape[0] != len(todo):
                raise ValueError(f"encoder returned {emb.shape[0]} vectors for {len(todo)} texts")
            norms = np.linalg.norm(emb, axis=1, keepdims=True)
            emb = emb / np.maximum(norms, 1e-12)
            for t, v in zip(todo, emb):
                self._cache[t] = v
            self.n_encoded += len(todo)
        if not texts:
            dim = next(iter(self._cache.values())).shape[0] if self._cache else 0
            return np.zeros((0, dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])


_SHARED: dict[int, TextEmbedder] = {}


def default_embedder(cfg=None, cache_dir=None) -> TextEmbedder:
    """A process-wide memoising embedder around the retrieval config's dense encoder (the same
    shared encoder object the retrieval stage uses), so reruns in one process encode nothing
    twice. `cfg`: RunConfig or RetrievalConfig (None: defaults)."""
    from grouprank.first_stage.config import RetrievalConfig
    from grouprank.first_stage.dense import encoder_from_config
    rcfg = cfg.retrieval if cfg is not None and hasattr(cfg, "retrieval") else (cfg or RetrievalConfig())
    enc = encoder_from_config(rcfg, cache_dir=cache_dir)
    emb = _SHARED.get(id(enc))
    if emb is None or emb.encoder is not enc:
        emb = _SHARED[id(enc)] = TextEmbedder(enc)
    return emb
