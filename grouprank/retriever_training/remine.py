"""Re-mine hard negatives with the fine-tuned model for another training round.

For each example query the fine-tuned model ranks the corpus; the new hard negatives are the first
documents of that ranking, from rank `remine_range[0]` down to `remine_range[1]`, that survive the
false-negative guard of the dataset builder (`grouprank.trainsets.retriever`: `guard_pool` rules 1–4
and `margin_filter` rule 5, with the same `GuardSpec` as the build_datasets stage). By default only
labelled documents can be picked — the guard's first rule drops an unlabelled document, because
nobody judged it and it may be relevant. With `remine_unjudged`, unlabelled documents may be picked
when their cosine under the fine-tuned model is below the positive's minus `remine_margin` (the
model-score analogue of the fused-margin rule), and they are never a positive's duplicate text.
Two rules hold in both modes, as in the dataset builder: a document humans cite for the query
(`human`, the collection's qrels under `datasets.human_guard`) is never its negative
(`guard_human_positive`), and a document whose text carries instructions aimed at a judge
(`grouprank.judges.injection`) is never picked (`remine_injection_flagged`).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from grouprank.text import top_k


def remine_negatives(examples: pd.DataFrame, *, doc_ids: list[str], doc_emb: np.ndarray, query_emb: dict[str, np.ndarray],
                     doc_texts: Mapping[str, str], labels, spec, n_negatives: int,
                     rank_range: tuple[int, int] = (1, 30), unjudged: bool = False, margin: float = 0.05,
                     human: Mapping[str, set[str]] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """New negatives for `examples` (EXAMPLE_COLUMNS frame) -> (frame, stats).

    doc_ids/doc_emb: the corpus and its embeddings under the fine-tuned model (L2-normalised);
    query_emb: query_id -> embedding; doc_texts: doc_id -> text (grouprank.text.document_text_map);
    labels: LABELS table (None only with `unjudged`); spec: trainsets GuardSpec; human: query id ->
    doc ids humans cite as relevant (`grouprank.trainsets.retriever.human_positive_map`), or None."""
    from grouprank.judges.injection import is_injection
    from grouprank.trainsets.common import QueryLabels, labels_by_query
    from grouprank.trainsets.retriever import guard_pool, margin_filter

    lo, hi = int(rank_range[0]), int(rank_range[1])
    if lo < 1 or hi < lo:
        raise ValueError(f"remine_range {rank_range} must be 1 <= lo <= hi")
    labs = labels_by_query(labels) if labels is not None else {}
    if not labs and not unjudged:
        raise ValueError("re-mining needs the labels table for the false-negative guard "
                         "(or retriever.remine_unjudged=true to pick unjudged documents by model margin)")
    pos_index = {d: i for i, d in enumerate(doc_ids)}
    stats: dict[str, Any] = {"remine_rows": 0, "remine_rows_changed": 0, "remine_rows_short": 0,
                             "remine_unjudged_picked": 0, "remine_unjudged_margin_dropped": 0,
                             "remine_injection_flagged": 0, "guard_human_positive": 0}
    human = human or {}
    stats["remine_human_guard_queries"] = sum(1 for q in set(examples["query_id"]) if human.get(q))
    flagged_doc: dict[str, bool] = {}

    def injected(d: str) -> bool:
        if d not in flagged_doc:
            flagged_doc[d] = is_injection(doc_texts.get(d, ""))
            stats["remine_injection_flagged"] += int(flagged_doc[d])
        return flagged_doc[d]

    positives_of: dict[str, list[str]] = {}
    for q, p in zip(examples["query_id"], examples["positive_doc_id"]):
        positives_of.setdefault(q, []).append(p)
    D = np.asarray(doc_emb, dtype=np.float32)
    ranked: dict[str, list[str]] = {}
    rows = []
    mean_rank = []
    for r in examples.itertuples(index=False):
        qid = r.query_id
        if qid not in query_emb:
            rows.append(r._asdict())
            continue
        if qid not in ranked:
            s = D @ query_emb[qid]
            top, _ = top_k(s, hi)
            ranked[qid] = [doc_ids[i] for i in top[lo - 1:]]
        cited = human.get(qid, frozenset())
        window = [d for d in ranked[qid] if not injected(d)]
        ql = labs.get(qid) or QueryLabels(qid, [], {}, {}, {})
        pos = positives_of[qid]
        norm = ql.norm_fused() if ql.fused else {}
        if unjudged:
            cos = lambda d: float(D[pos_index[d]] @ query_emb[qid])  # noqa: E731
            pos_cos = cos(r.positive_doc_id) if r.positive_doc_id in pos_index else 1.0
            chosen = _with_unjudged(ql, window, r.positive_doc_id, pos, cited, spec, doc_texts, stats, norm,
                                    cos, pos_cos - margin)
        else:
            eligible = guard_pool(ql, window, spec, doc_texts, pos, stats, human_positives=cited)
            chosen = margin_filter(ql, eligible, r.positive_doc_id, spec, stats, norm) \
                if r.positive_doc_id in norm else eligible
        chosen = [d for d in chosen if d not in pos][:n_negatives]
        stats["remine_rows"] += 1
        if len(chosen) < n_negatives:
            stats["remine_rows_short"] += 1
        stats["remine_unjudged_picked"] += sum(1 for d in chosen if d not in ql.grades)
        mean_rank += [ranked[qid].index(d) + lo for d in chosen]
        row = r._asdict()
        if chosen != list(r.negative_doc_ids):
            stats["remine_rows_changed"] += 1
        row["negative_doc_ids"] = chosen
        row["negatives"] = [doc_texts[d] for d in chosen]
        row["negative_grades"] = [ql.grades.get(d) for d in chosen]
        rows.append(row)
    stats["remine_mean_negative_rank"] = round(float(np.mean(mean_rank)), 2) if mean_rank else 0.0
    return pd.DataFrame(rows, columns=list(examples.columns)), stats


def _with_unjudged(ql, window: list[str], positive: str, pos: list[str], cited, spec, doc_texts, stats, norm,
                   cos, max_cos: float) -> list[str]:
    """The negatives of one row when unjudged documents may be picked: labelled documents pass the
    false-negative guard (and the fused-score margin), an unjudged one must be no human positive,
    have a cosine to the query (`cos(doc_id)`) below `max_cos` (the positive's minus the margin)
    and not share a positive's text."""
    from grouprank.trainsets.common import counter_add
    from grouprank.trainsets.retriever import duplicate_text_key, guard_pool, margin_filter
    labelled = [d for d in window if d in ql.grades]
    keep_l = set(guard_pool(ql, labelled, spec, doc_texts, pos, stats, human_positives=cited)) if labelled else set()
    if positive in norm:
        keep_l = set(margin_filter(ql, [d for d in labelled if d in keep_l], positive, spec, stats, norm))
    pos_txt = {duplicate_text_key(doc_texts[p]) for p in pos if p in doc_texts}
    chosen = []
    for d in window:
        if d in pos:
            continue
        if d in ql.grades:
            if d in keep_l:
                chosen.append(d)
            continue
        if d in cited:
            counter_add(stats, "guard_human_positive")
            continue
        if cos(d) >= max_cos:
            counter_add(stats, "remine_unjudged_margin_dropped")
            continue
        if duplicate_text_key(doc_texts.get(d, "")) in pos_txt:
            counter_add(stats, "guard_duplicate_text")
            continue
        chosen.append(d)
    return chosen
