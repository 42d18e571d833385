"""The GroupRank reward (GroupRank, arXiv 2511.11653), exactly as the paper states it:

    R = NDCG@10 + 0.2 · Recall@10 + 0.1 · (1 − JS(P, Q))   when the output is well formed
    R = −0.1                                                  when the tags are right but the JSON is not
    R = −0.5                                                  otherwise (tags wrong)

Well formed / tags right / tags wrong is `grouprank.prompts.groupwise.parse_output(text, n, strict=True)` giving
"ok" / "bad_json" / "bad_tags" (strict: only whitespace outside the tag pairs).

Choices the paper leaves open (all module constants / keyword arguments, all tested):

* **Ranking.** Documents are ranked by predicted score, descending. Ties are not broken by
  prompt position (that would let a constant answer score by the luck of the shuffle): NDCG@10
  and Recall@10 are the *expected* values over a uniformly random order of tied documents
  (each document of a tie block occupying positions p..p+k−1 gets the mean discount of those
  positions, and the probability share of those positions that fall inside the top 10).
* **NDCG gain: linear** (gain = gold grade, discount 1/log2(rank+1)), the same gain as the
  project's evaluation (ir-measures nDCG, linear unless stated), so the training reward and the
  reported metric agree. `gain="exp"` (2^g − 1) is available. IDCG@10 is computed from the gold
  grades of the group; a group with no positive grade has NDCG 0 (as trec_eval).
* **Recall@10 relevance: gold grade ≥ `rel_threshold` (default 1)**, i.e. any positive grade,
  matching ir-measures' default `rel=1` for R@k. (On TREC DL graded 0–3 one may prefer 2; set it.)
  A group with no relevant document has Recall@10 = 0. Note that for groups of ≤ 10 documents
  Recall@10 is 1 whenever a relevant document exists (the paper's definition; it only bites for
  groups of 11–20).
* **JS normalisation: sum-normalisation, log base 2** (so JS ∈ [0, 1]).
  P_i = s_i / Σ s (predicted 0–10 scores are ratio-scale: 0 means "no use", so sum-normalising
  keeps that meaning and is invariant to the /10 scaling). Q from the gold scores: if they are
  all ≥ 0 (grades, 0–10 scores, probabilities) Q_i = g_i / Σ g; if some are negative (the fused
  label score S = −β·log(rank_p) − (1−β)·log(rank_l) ≤ 0 has no absolute zero) they are first
  shifted by the group minimum, so the least relevant document of the group gets zero gold mass.
  An all-zero vector becomes uniform. No epsilon is needed: with M = (P+Q)/2, M_i > 0 wherever
  P_i or Q_i > 0, and 0·log 0 terms are 0, so JS is finite and bounded in [0, 1].
  Softmax was rejected: it depends on an arbitrary temperature and the two vectors live on
  different scales (0–10 integers vs log-rank scores), so no single temperature is fair to both.
  When `gold_scores` is missing (None) the gold grades are used for Q.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from grouprank.prompts.groupwise import parse_output

W_RECALL = 0.2
W_DIST = 0.1
PENALTY_BAD_JSON = -0.1
PENALTY_BAD_TAGS = -0.5
CUTOFF = 10


# --------------------------------------------------------------------------- ranking terms

def _tie_blocks(pred: Sequence[float]) -> list[list[int]]:
    """Indices grouped into blocks of equal predicted score, blocks in descending score order."""
    order = sorted(range(len(pred)), key=lambda i: -pred[i])
    blocks: list[list[int]] = []
    for i in order:
        if blocks and pred[blocks[-1][0]] == pred[i]:
            blocks[-1].append(i)
        else:
            blocks.append([i])
    return blocks


def _gain(g: float, gain: str) -> float:
    if gain == "linear":
        return float(g)
    if gain == "exp":
        return 2.0 ** float(g) - 1.0
    raise ValueError(f"unknown gain {gain!r} (linear|exp)")


def _disc(pos: int) -> float:  # pos is 1-based
    return 1.0 / math.log2(pos + 1)


def ndcg_at_k(pred: Sequence[float], grades: Sequence[float], k: int = CUTOFF, gain: str = "linear") -> float:
    """Expected NDCG@k of ranking by `pred` (random order within ties) against gold `grades`."""
    if len(pred) != len(grades):
        raise ValueError("pred and grades differ in length")
    gains = [max(0.0, _gain(g, gain)) for g in grades]
    ideal = sorted(gains, reverse=True)[:k]
    idcg = sum(g * _disc(r) for r, g in enumerate(ideal, 1))
    if idcg <= 0:
        return 0.0
    dcg, pos = 0.0, 1
    for block in _tie_blocks(pred):
        positions = range(pos, pos + len(block))
        mean_disc = sum(_disc(p) for p in positions if p <= k) / len(block)
        dcg += mean_disc * sum(gains[i] for i in block)
        pos += len(block)
    return dcg / idcg


def recall_at_k(pred: Sequence[float], grades: Sequence[float], k: int = CUTOFF, rel_threshold: float = 1) -> float:
    """Expected share of relevant documents (grade ≥ rel_threshold) ranked in the top k."""
    rel = [g >= rel_threshold for g in grades]
    n_rel = sum(rel)
    if n_rel == 0:
        return 0.0
    hit, pos = 0.0, 1
    for block in _tie_blocks(pred):
        inside = max(0, min(k, pos + len(block) - 1) - pos + 1)
        hit += (inside / len(block)) * sum(rel[i] for i in block)
        pos += len(block)
    return hit / n_rel


# --------------------------------------------------------------------------- distribution term

def to_distribution(values: Sequence[float]) -> list[float]:
    """Sum-normalisation (negatives: shift by the minimum first); all-zero -> uniform."""
    v = [float(x) for x in values]
    if not v:
        return []
    lo = min(v)
    if lo < 0:
        v = [x - lo for x in v]
    s = sum(v)
    if s <= 0:
        return [1.0 / len(v)] * len(v)
    return [x / s for x in v]


def js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen–Shannon divergence of two distributions, log base 2 (in [0, 1])."""
    if len(p) != len(q):
        raise ValueError("p and q differ in length")

    def kl(a, m):
        return sum(ai * math.log2(ai / mi) for ai, mi in zip(a, m) if ai > 0)

    m = [(a + b) / 2 for a, b in zip(p, q)]
    js = 0.5 * kl(p, m) + 0.5 * kl(q, m)
    return min(1.0, max(0.0, js))


# --------------------------------------------------------------------------- the reward

@dataclass
class RewardParts:
    status: str
    reward: float
    ndcg: float | None = None
    recall: float | None = None
    js: float | None = None


def score_reward(pred: Sequence[float], gold_grades: Sequence[float], gold_scores: Sequence[float] | None = None,
                 *, gain: str = "linear", rel_threshold: float = 1, k: int = CUTOFF) -> RewardParts:
    """R_G for a well-formed prediction."""
    nd = ndcg_at_k(pred, gold_grades, k, gain)
    rc = recall_at_k(pred, gold_grades, k, rel_threshold)
    q_src = gold_scores if gold_scores is not None else gold_grades
    js = js_divergence(to_distribution(pred), to_distribution(q_src))
    return RewardParts("ok", nd + W_RECALL * rc + W_DIST * (1.0 - js), nd, rc, js)


def completion_text(completion) -> str:
    """Text of a TRL completion: a str (standard format) or a list of messages (conversational)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, (list, tuple)):
        parts = [m.get("content", "") if isinstance(m, dict) else str(m) for m in completion
                 if not isinstance(m, dict) or m.get("role", "assistant") == "assistant"]
        return "".join(str(p) for p in parts)
    return "" if completion is None else str(completion)


def reward_one(text: str, gold_grades: Sequence[float], gold_scores: Sequence[float] | None = None,
               **kw) -> RewardParts:
    n = len(gold_grades)
    parsed = parse_output(text, n, strict=True)
    if parsed.status == "bad_tags":
        return RewardParts("bad_tags", PENALTY_BAD_TAGS)
    if parsed.status == "bad_json":
        return RewardParts("bad_json", PENALTY_BAD_JSON)
    return score_reward(parsed.scores, gold_grades, gold_scores, **kw)


# --------------------------------------------------------------------------- batch grouping

def group_indices(n: int, num_generations: int, keys: Sequence | None = None) -> list[list[int]]:
    """Indices of a flat generation batch cut into consecutive blocks of `num_generations`
    (TRL repeats each prompt `num_generations` times back to back). When `keys` (one hashable per
    completion, e.g. the prompt or the gold grades) are given, checks that every block holds one
    prompt only; raises ValueError when the batch is not aligned."""
    if num_generations < 1:
        raise ValueError("num_generations must be >= 1")
    if n % num_generations:
        raise ValueError(f"batch of {n} completions is not a multiple of num_generations={num_generations}")
    blocks = [list(range(s, s + num_generations)) for s in range(0, n, num_generations)]
    if keys is not None:
        if len(keys) != n:
            raise ValueError("keys and batch differ in length")
        for b in blocks:
            if any(keys[i] != keys[b[0]] for i in b):
                raise ValueError(f"completions {b[0]}..{b[-1]} do not share one prompt: batch not grouped "
                                 f"by num_generations={num_generations}")
    return blocks


def group_runs(keys: Sequence) -> list[list[int]]:
    """Fallback grouping: runs of consecutive equal keys."""
    blocks: list[list[int]] = []
    for i, k in enumerate(keys):
        if blocks and keys[blocks[-1][0]] == k:
            blocks[-1].append(i)
        else:
            blocks.append([i])
    return blocks


def _key(prompt, grades) -> str:
    return repr(prompt) + "|" + repr(list(grades))


def batch_stats(parts: list[RewardParts], blocks: list[list[int]]) -> dict[str, float]:
    """Per-prompt spread and format shares for logging."""
    import statistics
    n = max(1, len(parts))
    out = {
        "format/ok": sum(p.status == "ok" for p in parts) / n,
        "format/bad_json": sum(p.status == "bad_json" for p in parts) / n,
        "format/bad_tags": sum(p.status == "bad_tags" for p in parts) / n,
    }
    ok = [p for p in parts if p.status == "ok"]
    if ok:
        out["reward/ndcg10"] = sum(p.ndcg for p in ok) / len(ok)
        out["reward/recall10"] = sum(p.recall for p in ok) / len(ok)
        out["reward/js"] = sum(p.js for p in ok) / len(ok)
    spreads = [statistics.pstdev([parts[i].reward for i in b]) for b in blocks if len(b) > 1]
    if spreads:
        out["reward/per_prompt_std"] = sum(spreads) / len(spreads)
        out["reward/zero_spread_share"] = sum(s < 1e-9 for s in spreads) / len(spreads)
    return out


def groupwise_reward(completions, gold_grades, gold_scores=None, **kwargs) -> list[float]:
    """TRL-compatible reward function (GRPOTrainer `reward_funcs=[groupwise_reward]`).

    `completions`: strings or conversational message lists; `gold_grades`/`gold_scores`: one list
    per completion (TRL repeats dataset columns per generation). Optional kwargs:
    `num_generations` (group the flat batch into per-prompt blocks; else runs of equal prompts),
    `prompts`, `log_metric` (TRL >= 1.x passes it: per-prompt spread and format shares are logged),
    `gain`, `rel_threshold`.
    """
    n = len(completions)
    if gold_scores is None:
        gold_scores = [None] * n
    kw = {k: kwargs[k] for k in ("gain", "rel_threshold") if k in kwargs}
    parts = [reward_one(completion_text(c), g, s, **kw)
             for c, g, s in zip(completions, gold_grades, gold_scores, strict=True)]
    log_metric: Callable | None = kwargs.get("log_metric")
    if log_metric is not None or isinstance(kwargs.get("return_stats"), dict):
        prompts = kwargs.get("prompts") or [None] * n
        keys = [_key(p, g) for p, g in zip(prompts, gold_grades)]
        ng = kwargs.get("num_generations")
        try:
            blocks = group_indices(n, ng, keys) if ng else group_runs(keys)
        except ValueError:
            # a process slice may cut a prompt's generations (multi-GPU); fall back to runs
            blocks = group_runs(keys)
        stats = batch_stats(parts, blocks)
        if log_metric is not None:
            for k, v in stats.items():
                log_metric(k, v)
        if isinstance(kwargs.get("return_stats"), dict):
            kwargs["return_stats"].update(stats)
    return [p.reward for p in parts]


class GroupwiseReward:
    """`groupwise_reward` bound to a `num_generations` (and gain/threshold), usable as a TRL
    reward function; keeps the last batch's stats in `.last_stats` and a history of mean rewards."""

    def __init__(self, num_generations: int | None = None, gain: str = "linear", rel_threshold: float = 1):
        self.num_generations = num_generations
        self.gain, self.rel_threshold = gain, rel_threshold
        self.__name__ = "groupwise_reward"
        self.last_stats: dict[str, float] = {}
        self.history: list[float] = []

    def __call__(self, completions, gold_grades, gold_scores=None, **kwargs) -> list[float]:
        stats: dict[str, float] = {}
        kwargs = {k: v for k, v in kwargs.items() if k not in ("num_generations", "gain", "rel_threshold")}
        r = groupwise_reward(completions, gold_grades, gold_scores, num_generations=self.num_generations,
                             gain=self.gain, rel_threshold=self.rel_threshold, return_stats=stats, **kwargs)
        self.last_stats = stats
        self.history.append(sum(r) / max(1, len(r)))
        return r
