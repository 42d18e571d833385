"""Multi-scale group sampling (GroupRank, arXiv 2511.11653): sub-lists of 5–20 documents from each query's fused ranking.

For each query and each of `groups_per_query` groups (all draws from `seeded_rng(seed, "groups",
query_id)`, so a query's groups do not depend on the other queries or the processing order):

1. size s ~ `size_weights` over group_min..group_max (uniform by default), capped at the number of
   labelled documents n (a query with n < group_min gets no group);
2. n_top = round(top_share · s) documents drawn without replacement from the top
   max(top_window, n_top) of the fused ranking; the other s − n_top drawn uniformly from the rest
   of the ranking (so a group mixes likely-relevant top documents with lower-ranked ones);
3. `require_mixed`: if the query has documents with grade > 0 and with grade 0 but the group lacks
   one kind, one member of the over-represented kind (drawn at random) is swapped for a random
   document of the missing kind — a group of one kind only gives GRPO no ranking signal
   (NDCG is constant);
4. the group is shuffled (the paper: shuffled groups beat retrieval order) and, if it repeats an
   earlier group of the query as a set, redrawn (up to 8 tries, then kept and counted).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from grouprank.scoring.rng import seeded_rng


@dataclass(frozen=True)
class SamplingSpec:
    group_min: int = 5
    group_max: int = 20
    groups_per_query: int = 3
    size_weights: Mapping[int, float] | None = None
    top_share: float = 0.5
    top_window: int = 10
    require_mixed: bool = True
    seed: int = 13

    @classmethod
    def from_config(cls, dc, seed: int = 13) -> "SamplingSpec":
        return cls(dc.group_min, dc.group_max, dc.groups_per_query, dc.group_size_weights, dc.top_share,
                   dc.top_window, dc.require_mixed, seed)

    def sizes(self) -> tuple[list[int], list[float]]:
        if self.group_min > self.group_max:
            raise ValueError(f"group_min {self.group_min} > group_max {self.group_max}")
        if self.size_weights:
            items = sorted((int(k), float(v)) for k, v in self.size_weights.items() if float(v) > 0)
            bad = [k for k, _ in items if not self.group_min <= k <= self.group_max]
            if bad:
                raise ValueError(f"group_size_weights has sizes {bad} outside "
                                 f"[{self.group_min}, {self.group_max}]")
            if not items:
                raise ValueError("group_size_weights has no positive weight")
            return [k for k, _ in items], [v for _, v in items]
        sizes = list(range(self.group_min, self.group_max + 1))
        return sizes, [1.0] * len(sizes)


def sample_groups(query_id: str, ranking: Sequence[str], grades: Mapping[str, int], spec: SamplingSpec,
                  stats: dict | None = None) -> list[list[str]]:
    """Groups (lists of doc ids in prompt order) for one query; `ranking` is best-first."""
    stats = stats if stats is not None else {}
    ranking = list(ranking)
    n = len(ranking)
    if n < spec.group_min:
        stats["queries_too_few_docs"] = stats.get("queries_too_few_docs", 0) + 1
        return []
    rng = seeded_rng(spec.seed, "groups", query_id)
    sizes, weights = spec.sizes()
    rel = [d for d in ranking if grades.get(d, 0) > 0]
    non = [d for d in ranking if grades.get(d, 0) <= 0]
    groups: list[list[str]] = []
    seen: set[frozenset] = set()
    for _ in range(spec.groups_per_query):
        for attempt in range(8):
            s = min(rng.choices(sizes, weights)[0], n)
            n_top = min(s, int(round(spec.top_share * s)))
            window = ranking[:max(spec.top_window, n_top)]
            top = rng.sample(window, n_top)
            chosen = set(top)
            rest_pool = [d for d in ranking if d not in chosen]
            group = top + rng.sample(rest_pool, s - n_top)
            if spec.require_mixed and rel and non:
                group = _mix(group, rel, non, grades, rng, stats)
            rng.shuffle(group)
            key = frozenset(group)
            if key not in seen:
                break
            if attempt == 7:
                stats["duplicate_groups_kept"] = stats.get("duplicate_groups_kept", 0) + 1
        seen.add(key)
        groups.append(group)
    return groups


def _mix(group: list[str], rel: list[str], non: list[str], grades: Mapping[str, int], rng, stats: dict) -> list[str]:
    g_rel = [i for i, d in enumerate(group) if grades.get(d, 0) > 0]
    if not g_rel or len(g_rel) == len(group):
        missing = rel if not g_rel else non
        members = set(group)
        pool = [d for d in missing if d not in members]
        if pool and len(group) >= 2:
            group = list(group)
            group[rng.randrange(len(group))] = rng.choice(pool)
            stats["groups_mixed_by_swap"] = stats.get("groups_mixed_by_swap", 0) + 1
    return group
