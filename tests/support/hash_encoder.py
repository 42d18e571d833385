"""Test doubles for retrieval: a deterministic hashing encoder (no model, no torch) and a toy corpus.

Other stages' tests can build a real `HybridRetriever` in milliseconds with them:

    from tests.support.hash_encoder import HashEncoder, toy_documents
    r = HybridRetriever(toy_documents(), cfg, tmp_path, encoder=HashEncoder())
"""
from __future__ import annotations

import hashlib
import re
from typing import Sequence

import numpy as np
import pyarrow as pa


class HashEncoder:
    """Bag of hashed word prefixes (first 5 chars), L2-normalised: texts sharing words are close.
    Implements the part of `DenseEncoder` the pipeline uses, and counts its calls."""

    def __init__(self, dim: int = 64, name: str = "hash"):
        self.dimension = int(dim)
        self.model_id = f"{name}/d{dim}"
        self.n_encode_calls = 0
        self.n_texts_encoded = 0

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        self.n_encode_calls += 1
        self.n_texts_encoded += len(texts)
        out = np.zeros((len(texts), self.dimension), np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                h = int.from_bytes(hashlib.md5(w[:5].encode()).digest()[:8], "little")
                out[i, h % self.dimension] += 1.0
        n = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(n, 1e-12)

    def encode_queries(self, texts: Sequence[str], show_progress: bool | None = None) -> np.ndarray:
        return self._encode(texts)

    def encode_documents(self, texts: Sequence[str], show_progress: bool | None = None) -> np.ndarray:
        return self._encode(texts)


TOPICS = {
    "protein": "protein folding chaperone misfolded aggregation amyloid",
    "vitamin": "vitamin deficiency supplement bone calcium absorption",
    "virus": "virus infection replication host immune antiviral",
    "heart": "heart cardiac arrhythmia myocardial infarction blood pressure",
    "brain": "brain neuron synapse cortex memory cognition",
    "cancer": "tumor cancer metastasis oncogene chemotherapy survival",
}
FILLER = "study results patients analysis data effect observed increased reduced significant".split()


def toy_documents(n: int = 300, seed: int = 0, collection: str = "toy") -> pa.Table:
    """`n` documents, each about one topic (doc i has topic i % 6) plus filler words."""
    rng = np.random.default_rng(seed)
    names = list(TOPICS)
    ids, titles, texts = [], [], []
    for i in range(n):
        topic = names[i % len(names)]
        words = list(rng.choice(TOPICS[topic].split(), size=6)) + list(rng.choice(FILLER, size=10))
        rng.shuffle(words)
        ids.append(f"d{i:04d}")
        titles.append(f"{topic} report {i}")
        texts.append(" ".join(words))
    return pa.table({"doc_id": ids, "title": titles, "text": texts, "collection": [collection] * n})


def toy_queries(collection: str = "toy") -> pa.Table:
    qs = {"q-protein": "how do chaperones prevent protein aggregation",
          "q-vitamin": "vitamin supplement and bone calcium",
          "q-virus": "antiviral response to virus infection",
          "q-heart": "myocardial infarction and blood pressure"}
    return pa.table({"query_id": list(qs), "text": list(qs.values())})
