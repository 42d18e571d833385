"""Stage `build_datasets`: groupwise reranker examples (RL and SFT views, multi-scale sampled
groups) and retriever examples (positives and hard negatives) from the fused labels.
`build_datasets` is the library entry on tables; the `export` stage lives in `export_stage`."""
from __future__ import annotations

import json
from typing import Any, Mapping

import pyarrow as pa

from data_schemas import (CANDIDATES, DOCUMENTS, JUDGMENTS, LABELS, QRELS, QUERIES, RERANKER_RL, RERANKER_SFT,
                          RETRIEVER_EXAMPLES)
from grouprank.config_reads import only
from grouprank.judges.config import JudgesConfig
from grouprank.stage import Stage, StageContext, StageResult, TableOut, file, table

from grouprank.prompts.groupwise import TEMPLATE_VERSION
from grouprank.text import document_text_map

from .common import as_table, candidate_order, drop_pairs, injection_excluded_pairs, kept_queries, labels_by_query
from .reranker import build_reranker_examples
from .retriever import GuardSpec, build_retriever_examples, extractive_sources, human_positive_map
from .sampling import SamplingSpec


# --------------------------------------------------------------------------- build

def build_datasets(dc, *, documents, queries, labels, candidates=None, judgments=None, qrels=None,
                   grade_scale: int = 3, max_doc_chars: int = 3000, max_query_chars: int | None = 1000,
                   seed: int = 13) -> tuple[pa.Table, pa.Table, pa.Table, dict]:
    """Library entry: -> (RERANKER_RL, RERANKER_SFT, RETRIEVER_EXAMPLES tables, stats).
    `dc` is a `DatasetsConfig`; inputs are paths, Arrow tables or DataFrames. `qrels`: the
    collection's human qrels; with `dc.human_guard` a document humans cite for a kept mined query
    never becomes its hard negative (trainsets.retriever, rule 4b). `judgments`: with
    `dc.exclude_injection_flagged` (default) a (query, document) pair any judge row flags
    (`injection_flag`) is in no view, nor is any pair judged in the same listwise/groupwise prompt as
    a flagged one (its label was written with the attack in view); stats `injection_flagged_pairs` /
    `injection_neighbour_pairs` / `injection_flagged_excluded` (labelled pairs left out) /
    `injection_flagged_teacher_groups` (judge groups dropped). The export leaves the same pairs out of
    every label file (`export_stage`)."""
    labels_t = as_table(labels, LABELS)
    queries_t = as_table(queries, QUERIES)
    cand_t = as_table(candidates, CANDIDATES)
    judg_t = as_table(judgments, JUDGMENTS)
    labs = labels_by_query(labels_t)
    # prompt-injection flags (any judge row): with datasets.exclude_injection_flagged, such a pair and
    # its same-prompt neighbours are in no view (not in an RL/SFT group, not a retriever positive or negative)
    flagged, neighbours = injection_excluded_pairs(judg_t, dc.exclude_injection_flagged)
    exclude = (flagged | neighbours) if dc.exclude_injection_flagged else set()
    labs, n_excluded = drop_pairs(labs, exclude)
    queries_kept = kept_queries(queries_t)
    needed = {d for ql in labs.values() for d in ql.doc_ids}
    docs = document_text_map(as_table(documents, DOCUMENTS), needed)
    observed = max((g for ql in labs.values() for g in ql.grades.values()), default=0)
    stats: dict[str, Any] = {"queries_kept": len(queries_kept), "label_queries": len(labs),
                             "labelled_pairs": labels_t.num_rows,
                             "injection_flagged_pairs": len(flagged),
                             "injection_neighbour_pairs": len(neighbours),
                             "injection_flagged_excluded": n_excluded}
    from grouprank.prompts.common import cut_queries
    prompt_queries = cut_queries(queries_kept, max_query_chars, "reranker examples")  # as documents are cut
    rl, sft, _ = build_reranker_examples(labs, prompt_queries, docs, SamplingSpec.from_config(dc, seed),
                                         judgments=judg_t, sft_source=dc.sft_source,
                                         max_doc_chars=max_doc_chars,
                                         grade_scale=max(int(grade_scale), int(observed), 1), stats=stats,
                                         exclude=exclude)
    human = None
    if getattr(dc, "human_guard", False) and qrels is not None:
        human = human_positive_map(as_table(qrels, QRELS), [q for q in queries_kept if q in labs])
    stats["human_guard"] = bool(human)
    order = candidate_order(cand_t) if cand_t is not None else None
    if order and exclude:
        order = {q: [d for d in ds if (q, d) not in exclude] for q, ds in order.items()}
    ret, _ = build_retriever_examples(labs, queries_kept, docs, order,
                                      GuardSpec.from_config(dc), stats=stats, human=human,
                                      strip=extractive_sources(queries_t))
    return rl, sft, ret, stats


def run(inputs: dict, cfg, ctx: StageContext) -> StageResult:
    dc = cfg.datasets
    rl, sft, ret, stats = build_datasets(
        dc, documents=inputs["documents"], queries=inputs["mined_queries"], labels=inputs["labels"],
        candidates=inputs.get("candidates"), judgments=inputs.get("judgments"), qrels=inputs.get("qrels"),
        grade_scale=cfg.judges.grade_scale,
        max_doc_chars=cfg.prompts.max_doc_chars, max_query_chars=cfg.prompts.max_query_chars, seed=cfg.seed)
    extra = {"build": stats, "datasets_config": dc.model_dump(mode="json"), "template_version": TEMPLATE_VERSION}
    from grouprank.atomic import write_text_atomic
    bs = write_text_atomic(ctx.out_dir / "build_stats.json", json.dumps(stats, indent=2, sort_keys=True))
    return StageResult({"reranker_rl": TableOut(rl, extra), "reranker_sft": TableOut(sft, extra),
                        "retriever_examples": TableOut(ret, extra), "build_stats": bs}, _plain(stats))


def _plain(stats: Mapping[str, Any]) -> dict:
    return {k: (v if isinstance(v, (int, float, str)) else json.dumps(v, sort_keys=True)) for k, v in stats.items()}


STAGE = Stage(
    name="build_datasets", title="build datasets", run=run,
    help="groupwise reranker (RL/SFT) and retriever examples from labels",
    inputs=(table("documents", DOCUMENTS), table("mined_queries", QUERIES), table("candidates", CANDIDATES),
            table("labels", LABELS), table("judgments", JUDGMENTS, optional=True),
            # human qrels: the human guard of the retriever negatives (datasets.human_guard)
            table("qrels", QRELS, optional=True)),
    outputs=(table("reranker_rl", RERANKER_RL), table("reranker_sft", RERANKER_SFT),
             table("retriever_examples", RETRIEVER_EXAMPLES), file("build_stats", "build_stats.json")),
    sections=("data", "datasets", "prompts", "seed", only("judges", JudgesConfig, "grade_scale")),
)
