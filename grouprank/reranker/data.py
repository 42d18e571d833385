"""Groupwise examples straight from a collection's human qrels (for the CPU proof and tests).

The pipeline's own examples come from the dataset-building stage (tables RERANKER_SFT /
RERANKER_RL, built from fused LLM labels); this module makes rows of the *same* shape from
human graded qrels, so the trainer can be exercised on real data without the LLM stages:

* RL view  (TRL GRPOTrainer):  example_id, query_id, prompt (system+user messages), doc_ids,
  gold_grades, gold_scores (= grades as floats: non-negative, so the reward's JS term
  sum-normalises them), group_size.
* SFT view (TRL SFTTrainer):   example_id, query_id, messages (system+user+assistant target),
  doc_ids, gold_grades, group_size, target_source = "human_qrels" (scores from the human
  grades, templated rationale).

The assistant target is `render_target(reason, scores)` with score = round(10·grade/max_grade)
and a short templated reason naming the most and least useful documents.
"""
from __future__ import annotations

import random
from collections import defaultdict

from grouprank.prompts.groupwise import build_messages, render_target
from grouprank.text import document_text_map


def grade_to_score(grade: float, max_grade: float) -> int:
    if max_grade <= 0:
        return 0
    return int(max(0, min(10, round(10.0 * float(grade) / float(max_grade)))))


def template_reason(scores: list[int]) -> str:
    """A short, deterministic rationale consistent with `scores` (SFT targets only)."""
    idx = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    top = [i for i in idx if scores[i] == scores[idx[0]] and scores[i] > 0]
    zero = [i for i in range(len(scores)) if scores[i] == 0]
    parts = []
    if top:
        parts.append("Most useful: " + ", ".join(f"[{i + 1}]" for i in top) + ".")
    else:
        parts.append("No document answers the query.")
    if zero and top:
        parts.append("Not useful: " + ", ".join(f"[{i + 1}]" for i in zero) + ".")
    return " ".join(parts)


def groups_from_qrels(collection, *, split: str | None = None, group_sizes: tuple[int, ...] = (5,),
                      groups_per_query: int = 4, max_doc_chars: int = 3000, query_ids: list[str] | None = None,
                      min_relevant: int = 1, max_grade: int | None = None, seed: int = 13,
                      prefix: str = "q") -> tuple[list[dict], list[dict]]:
    """Sample groups of judged documents per query; returns (rl_rows, sft_rows).

    Each group holds at least `min_relevant` documents with grade > 0 (when the query has them)
    and is otherwise drawn at random from the judged pool, in random order (as the paper's
    shuffled groups)."""
    rng = random.Random(seed)
    qrels = collection.qrels_for(split).to_pylist()
    queries = {r["query_id"]: r["text"] for r in collection.queries_for(split).to_pylist()}
    texts = document_text_map(collection.documents)
    by_q: dict[str, dict[str, int]] = defaultdict(dict)
    for r in qrels:
        if r["doc_id"] in texts:
            by_q[r["query_id"]][r["doc_id"]] = max(int(r["grade"]), by_q[r["query_id"]].get(r["doc_id"], 0))
    if max_grade is None:
        max_grade = max((g for d in by_q.values() for g in d.values()), default=1) or 1
    qids = sorted(q for q in by_q if q in queries)
    if query_ids is not None:
        keep = set(query_ids)
        qids = [q for q in qids if q in keep]
    rl, sft = [], []
    for qid in qids:
        judged = sorted(by_q[qid].items())
        pos = [d for d, g in judged if g > 0]
        neg = [d for d, g in judged if g <= 0]
        for gi in range(groups_per_query):
            size = min(rng.choice(group_sizes), len(judged))
            k_pos = min(len(pos), max(min_relevant, rng.randint(1, max(1, size // 2))))
            k_pos = min(k_pos, size)
            chosen = rng.sample(pos, k_pos) + rng.sample(neg, min(len(neg), size - k_pos))
            if len(chosen) < size:  # not enough negatives: top up with more positives
                rest = [d for d in pos if d not in chosen]
                chosen += rng.sample(rest, min(len(rest), size - len(chosen)))
            rng.shuffle(chosen)
            grades = [by_q[qid][d] for d in chosen]
            docs = [texts[d] for d in chosen]
            msgs = build_messages(queries[qid], docs, max_doc_chars=max_doc_chars)
            scores = [grade_to_score(g, max_grade) for g in grades]
            ex_id = f"{prefix}{qid}-g{gi}"
            rl.append({"example_id": ex_id, "query_id": qid, "prompt": msgs, "doc_ids": chosen,
                       "gold_grades": grades, "gold_scores": [float(g) for g in grades],
                       "group_size": len(chosen)})
            target = render_target(template_reason(scores), scores)
            sft.append({"example_id": ex_id, "query_id": qid,
                        "messages": msgs + [{"role": "assistant", "content": target}],
                        "doc_ids": chosen, "gold_grades": grades, "group_size": len(chosen),
                        "target_source": "human_qrels"})
    return rl, sft
