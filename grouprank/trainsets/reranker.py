"""Groupwise reranker examples: the RL view (TRL GRPOTrainer) and the SFT view (TRL SFTTrainer).

RL view (table RERANKER_RL): one row per sampled group (`sampling.sample_groups`): `prompt` = the
exact GroupRank chat prompt (`grouprank.prompts.groupwise.build_messages`: system + user, documents
[1]..[c] in the shuffled group order), `doc_ids`, `gold_grades` (fused grades) and `gold_scores`
(fused scores, LABELS.fused_score) in prompt order — the columns the reward
`grouprank.reranker.reward.groupwise_reward(completions, gold_grades, gold_scores, **kw)` takes.

SFT view (table RERANKER_SFT): `messages` = the same prompt plus the assistant target
`render_target(reason, scores)`. Where the target comes from (`target_source` column):

* ``teacher:<judge_id>`` — a groupwise judge's own output on its own group: its rationale and its
  0–10 scores verbatim. This needs the group's prompt order, which the JUDGMENTS table carries only
  when `group_id` ends in ``#<position>`` (1-based position in the judge's prompt; rows of one group
  share the part before ``#``).
* ``teacher_scores:<judge_id>`` — a groupwise judge's group whose prompt order is not recorded: the
  judge's scores per document are kept, the documents are put in a seeded shuffled order, and the
  rationale is templated (the judge's rationale refers to positions we cannot recover).
* ``fused_labels`` — no groupwise judgment: the sampled groups of the RL view, with target scores
  round(10 · grade / grade_scale) and a templated rationale naming the documents per score band.

`sft_source`: ``teacher`` uses only judge groups; ``fused`` only fused labels; ``auto`` uses judge
groups for the queries that have any and fused labels for the others.
"""
from __future__ import annotations

import json
import re
from typing import Mapping

import pyarrow as pa

from data_schemas import RERANKER_RL, RERANKER_SFT
from grouprank.scoring.rng import seeded_rng

from .common import QueryLabels, counter_add
from .sampling import SamplingSpec, sample_groups

_POS = re.compile(r"^(.*)#(\d+)$")


def grade_to_score(grade: int, grade_scale: int) -> int:
    if grade_scale <= 0:
        return 0
    return int(max(0, min(10, round(10.0 * float(grade) / float(grade_scale)))))


BANDS = ((9, "Directly answers the query"), (7, "Very useful"), (5, "Somewhat useful"),
         (3, "Marginally useful"), (1, "Barely related"), (0, "Not useful"))


def templated_reason(scores: list[int]) -> str:
    """Deterministic rationale consistent with `scores`: the documents named per score band."""
    parts = []
    for i, (lo, name) in enumerate(BANDS):
        hi = 10 if i == 0 else BANDS[i - 1][0] - 1
        idx = [k + 1 for k, s in enumerate(scores) if lo <= s <= hi]
        if idx:
            parts.append(f"{name}: " + ", ".join(f"[{k}]" for k in idx) + ".")
    return " ".join(parts)


def _messages(query: str, group: list[str], docs: Mapping[str, str], max_doc_chars: int) -> list[dict]:
    from grouprank.prompts.groupwise import build_messages
    return build_messages(query, [docs[d] for d in group], max_doc_chars=max_doc_chars)


def _target(reason: str, scores: list[int]) -> dict:
    from grouprank.prompts.groupwise import render_target
    return {"role": "assistant", "content": render_target(reason, scores)}


def build_rl_and_fused_sft(labels: dict[str, QueryLabels], queries: Mapping[str, str], docs: Mapping[str, str],
                           spec: SamplingSpec, *, max_doc_chars: int, grade_scale: int,
                           stats: dict) -> tuple[list[dict], dict[str, list[dict]]]:
    """RL rows for every kept query, and the fused-label SFT rows per query (same groups)."""
    rl: list[dict] = []
    sft: dict[str, list[dict]] = {}
    for qid in sorted(labels):
        if qid not in queries:
            counter_add(stats, "label_queries_not_kept")
            continue
        ql = labels[qid]
        ranking = [d for d in ql.doc_ids if d in docs]
        if len(ranking) < len(ql.doc_ids):
            counter_add(stats, "labelled_docs_without_text", len(ql.doc_ids) - len(ranking))
        groups = sample_groups(qid, ranking, ql.grades, spec, stats)
        for k, group in enumerate(groups):
            grades = [ql.grades[d] for d in group]
            msgs = _messages(queries[qid], group, docs, max_doc_chars)
            ex_id = f"{qid}#g{k}"
            rl.append({"example_id": ex_id, "query_id": qid, "prompt": msgs, "doc_ids": group,
                       "gold_grades": grades, "gold_scores": [ql.fused[d] for d in group],
                       "group_size": len(group)})
            scores = [grade_to_score(g, grade_scale) for g in grades]
            sft.setdefault(qid, []).append({
                "example_id": ex_id, "query_id": qid, "messages": msgs + [_target(templated_reason(scores), scores)],
                "doc_ids": group, "gold_grades": grades, "group_size": len(group),
                "target_source": "fused_labels"})
    return rl, sft


def teacher_groups(judgments: pa.Table, stats: dict) -> dict[str, list[dict]]:
    """Groupwise judge outputs, one dict per judged group: {judge_id, query_id, pass_index, group,
    doc_ids (prompt order if known, else sorted), scores, reason, ordered}. Incomplete groups
    (a failed row, a missing score) are skipped and counted."""
    if judgments is None or judgments.num_rows == 0:
        return {}
    cols = ["judge_id", "kind", "query_id", "doc_id", "pass_index", "group_id", "score", "rationale", "status"]
    rows = judgments.select(cols).to_pylist()
    per: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["kind"] != "groupwise" or r["group_id"] is None:
            continue
        m = _POS.match(str(r["group_id"]))
        base, pos = (m.group(1), int(m.group(2))) if m else (str(r["group_id"]), None)
        per.setdefault((r["judge_id"], str(r["query_id"]), int(r["pass_index"]), base), []).append({**r, "pos": pos})
    out: dict[str, list[dict]] = {}
    for key in sorted(per):
        judge_id, qid, pass_index, base = key
        members = per[key]
        if any(m["status"] != "ok" or m["score"] is None for m in members):
            counter_add(stats, "teacher_groups_incomplete")
            continue
        positions = [m["pos"] for m in members]
        ordered = all(p is not None for p in positions) and sorted(positions) == list(range(1, len(members) + 1))
        members = sorted(members, key=(lambda m: m["pos"]) if ordered else (lambda m: str(m["doc_id"])))
        reason = next((m["rationale"] for m in members if m["rationale"]), None)
        out.setdefault(qid, []).append({
            "judge_id": judge_id, "query_id": qid, "pass_index": pass_index, "group": base,
            "doc_ids": [str(m["doc_id"]) for m in members],
            "scores": [int(max(0, min(10, round(float(m["score"]))))) for m in members],
            "reason": reason, "ordered": ordered and bool(reason)})
    return out


def teacher_sft_rows(qid: str, groups: list[dict], query: str, labels: QueryLabels, docs: Mapping[str, str],
                     *, max_doc_chars: int, seed: int, stats: dict,
                     exclude: set[tuple[str, str]] | frozenset = frozenset()) -> list[dict]:
    """SFT rows from one query's judged groups. A group holding an `exclude`d (query, document) pair
    (an injection-flagged pair) is dropped whole: the judge's rationale and scores were written with
    that document in view. Counted as `injection_flagged_teacher_groups`."""
    rows = []
    for g in groups:
        ids, scores = list(g["doc_ids"]), list(g["scores"])
        if exclude and any((qid, d) in exclude for d in ids):
            counter_add(stats, "injection_flagged_teacher_groups")
            continue
        if any(d not in docs for d in ids) or any(d not in labels.grades for d in ids):
            counter_add(stats, "teacher_groups_unlabelled_or_missing_text")
            continue
        if g["ordered"]:
            reason, source = g["reason"], f"teacher:{g['judge_id']}"
        else:
            order = list(range(len(ids)))
            seeded_rng(seed, "teacher_order", g["judge_id"], qid, g["pass_index"], g["group"]).shuffle(order)
            ids, scores = [ids[i] for i in order], [scores[i] for i in order]
            reason, source = templated_reason(scores), f"teacher_scores:{g['judge_id']}"
        msgs = _messages(query, ids, docs, max_doc_chars)
        rows.append({"example_id": f"{qid}#{g['judge_id']}#p{g['pass_index']}#{g['group']}", "query_id": qid,
                     "messages": msgs + [_target(reason, scores)], "doc_ids": ids,
                     "gold_grades": [labels.grades[d] for d in ids], "group_size": len(ids),
                     "target_source": source})
    return rows


def build_reranker_examples(labels: dict[str, QueryLabels], queries: Mapping[str, str], docs: Mapping[str, str],
                            spec: SamplingSpec, *, judgments: pa.Table | None = None, sft_source: str = "auto",
                            max_doc_chars: int = 3000, grade_scale: int = 3,
                            stats: dict | None = None,
                            exclude: set[tuple[str, str]] | frozenset = frozenset()) -> tuple[pa.Table, pa.Table, dict]:
    """-> (RERANKER_RL table, RERANKER_SFT table, stats). `exclude`: (query, document) pairs no
    example may hold (the RL and fused-label SFT groups are sampled from `labels`, which the caller
    has already cleared of them; a judge's group holding one is dropped)."""
    stats = stats if stats is not None else {}
    rl, fused_sft = build_rl_and_fused_sft(labels, queries, docs, spec, max_doc_chars=max_doc_chars,
                                           grade_scale=grade_scale, stats=stats)
    teacher = teacher_groups(judgments, stats) if sft_source in ("auto", "teacher") else {}
    if sft_source == "teacher" and not teacher:
        from grouprank.errors import UserError
        raise UserError("datasets.sft_source=teacher but there are no complete groupwise judgments "
                        "(run a groupwise judge, or use sft_source=auto|fused)")
    sft: list[dict] = []
    for qid in sorted(set(fused_sft) | set(teacher)):
        if qid in teacher and qid in queries and qid in labels:
            rows = teacher_sft_rows(qid, teacher[qid], queries[qid], labels[qid], docs,
                                    max_doc_chars=max_doc_chars, seed=spec.seed, stats=stats, exclude=exclude)
            if rows or sft_source == "teacher":
                sft.extend(rows)
                continue
        if sft_source != "teacher":
            sft.extend(fused_sft.get(qid, []))
    sizes: dict[int, int] = {}
    for r in rl:
        sizes[r["group_size"]] = sizes.get(r["group_size"], 0) + 1
    stats["rl_examples"] = len(rl)
    stats["rl_queries"] = len({r["query_id"] for r in rl})
    stats["sft_examples"] = len(sft)
    src: dict[str, int] = {}
    for r in sft:
        key = r["target_source"].split(":")[0]
        src[key] = src.get(key, 0) + 1
    for k, v in sorted(src.items()):
        stats[f"sft_target_{k}"] = v
    stats["group_size_counts"] = json.dumps({str(k): v for k, v in sorted(sizes.items())})
    gold: dict[int, int] = {}
    for r in rl:
        for g in r["gold_grades"]:
            gold[g] = gold.get(g, 0) + 1
    stats["rl_gold_grade_counts"] = json.dumps({str(k): v for k, v in sorted(gold.items())})
    return RERANKER_RL.from_records(rl), RERANKER_SFT.from_records(sft), stats
