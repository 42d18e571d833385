"""The one per-query random generator of the project: pooling, the groupwise groups (judge and
reranker) and the training-set sampling all draw from `seeded_rng`."""
from __future__ import annotations

import hashlib
import random


def seeded_rng(seed: int, purpose: str, *key: object) -> random.Random:
    """A `random.Random` that depends only on (seed, purpose, key): the draws for one query are the
    same whatever other queries exist and in whatever order they are processed (no shared stream,
    no Python `hash()` randomisation). `purpose` keeps two uses of one (seed, key) apart
    ("pool", "groupwise", "groups", "teacher_order"). Seeded from the first 8 bytes (big-endian)
    of sha256("seed␟purpose␟key…")."""
    h = hashlib.sha256("\x1f".join([str(int(seed)), purpose, *map(str, key)]).encode("utf-8")).digest()
    return random.Random(int.from_bytes(h[:8], "big"))
