"""Disjoint groups for groupwise scoring (GroupRank, arXiv 2511.11653): shuffle the N candidates, cut them into
ceil(N/c) groups of near-equal size (sizes differ by at most one, so no group of 1–2 stragglers
next to full ones), score every group in one call."""
from __future__ import annotations

import math
import random
from typing import Sequence


def split_groups(items: Sequence, c: int) -> list[list]:
    """ceil(N/c) disjoint groups of near-equal size, in `items` order (the first N mod k groups
    are one larger). `c` < 1 counts as 1."""
    n = len(items)
    if n == 0:
        return []
    k = math.ceil(n / max(1, c))
    base, extra = divmod(n, k)
    out, i = [], 0
    for g in range(k):
        size = base + (1 if g < extra else 0)
        out.append(list(items[i:i + size]))
        i += size
    return out


def shuffled_groups(items: Sequence, c: int, rng: random.Random) -> list[list]:
    """`split_groups` of a copy of `items` shuffled by `rng` (the caller seeds it per query and
    pass, so every pass reshuffles and a rerun gives the same groups)."""
    ids = list(items)
    rng.shuffle(ids)
    return split_groups(ids, c)
