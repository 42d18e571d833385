"""The one per-query random generator of the project: pooling, the groupwise groups (judge and
reranker) and the training-set sampling all draw from `seeded_rng` (`seeded_generator` for numpy).

A generator depends only on (seed, purpose, key): the draws for one query are the same whatever
other queries exist and in whatever order they are processed (no shared stream, no Python `hash()`
randomisation). `purpose` keeps two uses of one (seed, key) apart.

How a purpose turns (seed, key) into the generator's seed is pinned: each keeps the stream it drew
before the generators were merged, so a seed still gives the same pools, groups and training sets
(changing one changes every export drawn with that seed):
- "groupwise" (judge and reranker groups): `random.Random("seed|query|pass")`;
- "pool" (`first_stage.pooling`, numpy): sha256("seed:query")[:8] little-endian;
- any other purpose ("groups", "teacher_order"): sha256("seed␟purpose␟key…")[:8] big-endian.
"""
from __future__ import annotations

import hashlib
import random

import numpy as np


def _sha_int(text: str, byteorder: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], byteorder)


def _seed_of(seed: int, purpose: str, key: tuple) -> int | str:
    parts = [str(int(seed)), *map(str, key)]
    if purpose == "groupwise":
        return "|".join(parts)
    if purpose == "pool":
        return _sha_int(":".join(parts), "little")
    return _sha_int("\x1f".join([parts[0], purpose, *parts[1:]]), "big")


def seeded_rng(seed: int, purpose: str, *key: object) -> random.Random:
    """A `random.Random` for (seed, purpose, key)."""
    return random.Random(_seed_of(seed, purpose, key))


def seeded_generator(seed: int, purpose: str, *key: object) -> np.random.Generator:
    """A numpy `Generator` for (seed, purpose, key) (for numpy's samplers, e.g. `choice`)."""
    s = _seed_of(seed, purpose, key)
    if isinstance(s, str):
        raise ValueError(f"purpose {purpose!r} seeds a random.Random: use seeded_rng")
    return np.random.default_rng(s)
