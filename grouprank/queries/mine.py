"""The query-mining stage's logic, on in-memory tables (stage.py adds the Parquet I/O).

    table, report = mine_queries(cfg, documents, queries, qrels)

1. existing queries: the collection's `cfg.queries.splits` + `cfg.queries.files` (column mapping);
2. generated queries (when `cfg.queries.generate`): sampled documents x query types through the
   LLM client (parse failures recorded as parse_error / generation_failed);
3. leakage guard against the evaluation sets (`leakage_eval_splits` of the collection +
   `eval_files`): decision "leakage";
4. round-trip filter on generated queries (hybrid retriever; rank recorded for all generated
   queries with text): decision "roundtrip" when the source document ranks > k;
5. exact then near-duplicate dedup among what is left: "duplicate" / "near_duplicate".

Precedence: parse_error/generation_failed > leakage > roundtrip > duplicate > near_duplicate.
Leakage comes first so that a leaking query can never be a dedup representative; round-trip
comes before dedup so representatives are chosen among queries that passed it.
Every query stays in the table with its decision; downstream stages use decision == "kept".

A collection without a train split mined with `splits: [auto]` (Cranfield, CISI, NPL): a seeded
share of its judged queries (`auto_holdout_fraction`) is left out of mining and is the leakage
guard's evaluation set; the evaluate stage then scores exactly those (it leaves out training queries).
"""
from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from typing import Any, Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from data_schemas import QUERIES
from grouprank.errors import UserError

from . import sources
from .dedup import exact_groups, near_groups
from .leakage import EvalQuery, find_leaks
from .roundtrip import rank_summary, source_ranks

log = logging.getLogger(__name__)


def eval_queries(cfg, queries: pa.Table | None, collection: str = "") -> list[EvalQuery]:
    """The evaluation sets: the collection's `leakage_eval_splits` plus `eval_files`."""
    qc = cfg.queries
    out: list[EvalQuery] = []
    have = sources.query_splits(queries)
    eval_splits = sources.resolve_splits(qc.leakage_eval_splits, have, "guard")
    if queries is not None and list(qc.leakage_eval_splits) == [sources.AUTO] and \
            sources.auto_holdout_applies(qc.splits, have):
        # no train split: the held-out share of the judged queries is the evaluation set to guard
        held = _held_out(cfg, queries)
        out += [EvalQuery(str(q), x, f"{collection}/{sp}/heldout" if collection else f"{sp}/heldout")
                for q, x, sp in zip(queries["query_id"].to_pylist(), queries["text"].to_pylist(),
                                    queries["split"].to_pylist()) if str(q) in held]
    if queries is not None and eval_splits:
        present = set(queries.column("split").to_pylist())
        for split in eval_splits:
            if split not in present:
                raise UserError(f"leakage eval split {split!r} not in the collection (it has {sorted(present)}); "
                                "set queries.leakage_eval_splits")
            t = queries.filter(pc.equal(queries["split"], split))
            out += [EvalQuery(str(q), x, f"{collection}/{split}" if collection else split)
                    for q, x in zip(t["query_id"].to_pylist(), t["text"].to_pylist())]
    for src in qc.eval_files:
        for r in sources.from_source(src):
            out.append(EvalQuery(r["query_id"], r["text"], r["collection"] + "/" + r["split"]))
    return out


def _held_out(cfg, queries: pa.Table) -> set[str]:
    """The judged queries held out of "auto" mining on a collection without a train split."""
    have = sources.query_splits(queries)
    ids = [q for q, sp in zip(queries["query_id"].to_pylist(), queries["split"].to_pylist()) if sp in have]
    return sources.holdout_ids(ids, cfg.queries.auto_holdout_fraction, cfg.seed)


def existing_queries(cfg, queries: pa.Table | None, collection: str = "",
                     quarantine: list | None = None) -> list[dict]:
    qc = cfg.queries
    out: list[dict] = []
    have = sources.query_splits(queries)
    splits = sources.resolve_splits(qc.splits, have, "mine")
    if queries is not None and splits:
        recs = sources.from_table(queries, splits, collection=collection or None)
        if sources.auto_holdout_applies(qc.splits, have):  # kept apart for evaluation (eval_queries guards them)
            held = _held_out(cfg, queries)
            recs = [r for r in recs if str(r["query_id"]) not in held]
        for split in splits:
            part = [r for r in recs if r["split"] == split]
            out += sources.cap(part, qc.max_queries, cfg.seed)
    for src in qc.files:
        out += sources.cap(sources.from_source(src, quarantine), qc.max_queries, cfg.seed)
    return out


def _llm_client(cfg):
    from grouprank.llm.from_config import llm_client
    return llm_client(cfg, cfg.queries.endpoint, who="queries.generate", stage="queries")


def _eval_docs(cfg, qrels: pa.Table | None, evals: Sequence[EvalQuery]) -> set[str]:
    """Documents judged for an evaluation query, when queries.exclude_eval_docs asks to avoid them."""
    if not cfg.queries.exclude_eval_docs:
        return set()
    if qrels is None:
        raise UserError("queries.exclude_eval_docs needs qrels")
    eval_ids = {e.query_id for e in evals}
    return {str(d) for q, d in zip(qrels["query_id"].to_pylist(), qrels["doc_id"].to_pylist()) if q in eval_ids}


def extract(cfg, documents: pa.Table, existing: Sequence[dict], qrels: pa.Table | None, evals: Sequence[EvalQuery],
            collection: str = "", search: Callable | None = None) -> tuple[list[dict], dict]:
    """Sample documents (seeded apart from generation's) and take an extractive query from each.
    `queries.extract_sampling: unreached` samples first among the documents no existing query
    reaches (`search(texts, k)` -> per text [(doc_id, score), ...]; needed for that sampling)."""
    from .extractive import extract_queries
    from .generation import sample_documents
    qc = cfg.queries
    exclude = _eval_docs(cfg, qrels, evals)
    info: dict[str, Any] = {"sampling": qc.extract_sampling, "excluded_eval_docs": len(exclude)}
    reached: set[str] = set()
    texts = [r["text"] for r in existing if r.get("decision") == "kept"]
    if qc.extract_sampling == "unreached" and texts:
        if search is None:
            raise ValueError("extract_sampling 'unreached' needs a search function")
        reached = {d for hits in search(texts, qc.extract_reach_k) for d, _ in hits}
        info["reached_docs"] = len(reached)
    pick = sample_documents(documents, qc.extract_docs, strategy=qc.sampling, seed=cfg.seed + 1,
                            strata=qc.length_strata, min_chars=qc.min_doc_chars, exclude=exclude | reached)
    if len(pick) < qc.extract_docs and reached:  # too few unreached documents: top up among the reached
        pick += sample_documents(documents, qc.extract_docs - len(pick), strategy=qc.sampling, seed=cfg.seed + 2,
                                 strata=qc.length_strata, min_chars=qc.min_doc_chars, exclude=exclude | set(pick))
    recs, skipped = extract_queries(documents, pick, collection=collection, min_words=qc.extract_min_words)
    return recs, {**info, "sampled_docs": len(pick), "sampled_unreached": len(set(pick) - reached),
                  "queries": len(recs), "docs_without_sentence": skipped}


def generate(cfg, documents: pa.Table, existing: Sequence[dict], qrels: pa.Table | None, evals: Sequence[EvalQuery],
             client=None, collection: str = "", progress=None) -> tuple[list[dict], dict]:
    """Sample documents and generate queries (see generation.py). Returns (records, info).
    `progress(done, total)` is called as the requests are answered."""
    from .generation import few_shot_examples, generate_queries, sample_documents
    qc = cfg.queries
    exclude = _eval_docs(cfg, qrels, evals)
    doc_ids = sample_documents(documents, qc.generate_docs, strategy=qc.sampling, seed=cfg.seed,
                               strata=qc.length_strata, min_chars=qc.min_doc_chars, exclude=exclude)
    examples = few_shot_examples(existing, qrels, documents, qc.few_shot, cfg.seed)
    own = client is None
    client = client or _llm_client(cfg)
    try:
        recs = generate_queries(documents, doc_ids, client, qc.query_types, collection=collection,
                                templates=qc.templates, max_doc_chars=cfg.prompts.max_doc_chars, examples=examples,
                                temperature=qc.temperature, max_tokens=qc.max_tokens, seed=cfg.seed,
                                progress=progress)
        usage = client.usage()
    finally:
        if own:
            client.close()
    info = {"sampled_docs": len(doc_ids), "excluded_eval_docs": len(exclude), "few_shot": len(examples),
            "requests": len(recs), "llm_calls": usage.get("calls", 0), "llm_cached": usage.get("cached_calls", 0),
            "llm_retries": usage.get("retries", 0), "llm_parse_retries": usage.get("parse_retries", 0),
            "prompt_tokens": usage.get("prompt_tokens", 0), "completion_tokens": usage.get("completion_tokens", 0),
            "cost_usd": usage.get("cost_usd", 0.0), "generator_model": client.endpoint.model}
    return recs, info


def apply_filters(records: list[dict], evals: Sequence[EvalQuery], *, embed: Callable | None,
                  rank_fn: Callable | None, cfg) -> dict:
    """Set decision / decision_detail / roundtrip_rank on `records` in place (priority order =
    list order: leakage, round trip, exact then near dedup). Returns the filter report."""
    qc = cfg.queries
    t0 = time.perf_counter()
    report: dict[str, Any] = {"leakage": _leakage_filter(records, evals, embed, qc)}
    t1 = time.perf_counter()
    report["roundtrip"] = _roundtrip_filter(records, rank_fn, qc)
    t2 = time.perf_counter()
    report["dedup"] = _dedup_filter(records, embed, qc)
    report["timings_s"] = {"leakage": round(t1 - t0, 3), "roundtrip": round(t2 - t1, 3),
                           "dedup": round(time.perf_counter() - t2, 3)}
    return report


def _leakage_filter(records: list[dict], evals: Sequence[EvalQuery], embed: Callable | None, qc) -> dict:
    """Kept queries that copy an evaluation query become decision "leakage"."""
    active = [i for i, r in enumerate(records) if r["decision"] == "kept"]
    leaks = find_leaks([records[i]["text"] for i in active], evals, embed, threshold=qc.leakage_threshold,
                       lexical_threshold=qc.leakage_lexical_threshold, min_tokens=qc.leakage_min_tokens)
    by_via: Counter = Counter()
    by_source: Counter = Counter()
    by_set: Counter = Counter()
    for i, lk in zip(active, leaks):
        if lk is not None:
            records[i]["decision"] = "leakage"
            records[i]["decision_detail"] = lk.detail()
            by_via[lk.via] += 1
            by_source[records[i]["source"]] += 1
            by_set[lk.eval_set] += 1
    return {"eval_queries": len(evals), "flagged": sum(by_via.values()), "by_via": dict(by_via),
            "by_source": dict(by_source), "by_eval_set": dict(by_set),
            "threshold": qc.leakage_threshold, "lexical_threshold": qc.leakage_lexical_threshold}


def _roundtrip_filter(records: list[dict], rank_fn: Callable | None, qc) -> dict:
    """The source document's rank for every generated query with text; a kept one whose source
    ranks below k becomes decision "roundtrip"."""
    gen = [i for i, r in enumerate(records) if r["source"] == "generated"
           and r["decision"] not in ("parse_error", "generation_failed")]
    rt: dict[str, Any] = {"enabled": bool(qc.roundtrip and rank_fn is not None), "k": qc.roundtrip_k}
    if not (gen and qc.roundtrip and rank_fn is not None):
        if gen:
            rt["skipped"] = "disabled" if not qc.roundtrip else "no retriever"
        return rt
    depth = max(qc.roundtrip_depth, qc.roundtrip_k)
    ranks = source_ranks([records[i]["text"] for i in gen], [records[i]["source_doc_id"] for i in gen],
                         rank_fn, depth)
    for i, r in zip(gen, ranks):
        records[i]["roundtrip_rank"] = r
        if records[i]["decision"] == "kept" and (r is None or r > qc.roundtrip_k):
            records[i]["decision"] = "roundtrip"
            records[i]["decision_detail"] = (f"source doc rank {r} > k={qc.roundtrip_k}" if r is not None
                                             else f"source doc not in top {depth}")
    rt.update(rank_summary(ranks, qc.roundtrip_k, depth))
    per_type: dict[str, list] = {}
    for i, r in zip(gen, ranks):
        per_type.setdefault(records[i]["query_type"] or "?", []).append(r)
    rt["by_type"] = {t: rank_summary(v, qc.roundtrip_k, depth) for t, v in sorted(per_type.items())}
    rt["dropped"] = sum(1 for i in gen if records[i]["decision"] == "roundtrip")
    return rt


def _dedup_filter(records: list[dict], embed: Callable | None, qc) -> dict:
    """Exact duplicates, then near duplicates (embedding cosine; existing queries among themselves
    only with `queries.dedup_existing: near`), of an earlier kept query are dropped."""
    alive = [i for i, r in enumerate(records) if r["decision"] == "kept"]
    groups = exact_groups([records[i]["text"] for i in alive])
    n_dup = 0
    for pos, g in enumerate(groups):
        if g is not None:
            i, j = alive[pos], alive[g]
            records[i]["decision"] = "duplicate"
            records[i]["decision_detail"] = f"of={records[j]['query_id']}"
            n_dup += 1
    alive = [i for i, r in enumerate(records) if r["decision"] == "kept"]
    n_near = 0
    if embed is not None and len(alive) > 1:
        existing = [records[i]["source"] == "existing" for i in alive]
        if qc.dedup_existing == "near":
            eligible = None
        else:
            def eligible(a: int, b: int) -> bool:
                return not (existing[a] and existing[b])
        if eligible is not None and all(existing):
            near = [None] * len(alive)  # nothing eligible: skip the encoding
        else:
            near = near_groups(embed([records[i]["text"] for i in alive]), qc.dedup_threshold, eligible)
        for pos, g in enumerate(near):
            if g is not None:
                i, j = alive[pos], alive[g[0]]
                records[i]["decision"] = "near_duplicate"
                records[i]["decision_detail"] = f"of={records[j]['query_id']} cos={g[1]:.3f}"
                n_near += 1
    return {"duplicate": n_dup, "near_duplicate": n_near, "threshold": qc.dedup_threshold,
            "existing_among_themselves": qc.dedup_existing}


def summarize(records: Sequence[dict]) -> dict:
    dec = Counter(r["decision"] for r in records)
    by_src: dict[str, dict] = {}
    for r in records:
        by_src.setdefault(r["source"], Counter())[r["decision"]] += 1
    return {"total": len(records), "kept": dec.get("kept", 0), "decisions": dict(sorted(dec.items())),
            "by_source": {s: dict(sorted(c.items())) for s, c in sorted(by_src.items())}}


def mine_queries(cfg, documents: pa.Table | None, queries: pa.Table | None, qrels: pa.Table | None = None, *,
                 collection: str | None = None, embed: Callable | None = None, rank_fn: Callable | None = None,
                 client=None, quarantine: list | None = None, progress=None) -> tuple[pa.Table, dict]:
    """The whole stage on in-memory tables -> (QUERIES table of every query with its decision, report).

    `embed` (texts -> normalised vectors; default: the retrieval config's dense encoder, memoised),
    `rank_fn` (texts, doc_ids, k -> ranks; default: the hybrid retriever over `documents`, built
    only when there are generated queries) and `client` (an LLMClient; default: from
    cfg.llm.endpoints) can be injected."""
    qc = cfg.queries
    t0 = time.perf_counter()
    if collection is None:
        cols = (documents if documents is not None else queries)
        collection = ""
        if cols is not None and "collection" in cols.column_names and cols.num_rows:
            collection = str(cols.column("collection")[0].as_py())
    existing = existing_queries(cfg, queries, collection, quarantine)
    evals = eval_queries(cfg, queries, collection)
    report: dict[str, Any] = {"collection": collection, "existing": len(existing)}
    warnings = []
    have = sources.query_splits(queries)
    mined_splits = sources.resolve_splits(qc.splits, have, "mine") or []
    guard_splits = sources.resolve_splits(qc.leakage_eval_splits, have, "guard") or []
    report["splits"] = mined_splits
    report["leakage_eval_splits"] = guard_splits
    if queries is not None and sources.auto_holdout_applies(qc.splits, have):
        n_held = len(_held_out(cfg, queries))
        report["auto_heldout_queries"] = n_held
        log.info("mine_queries: %s has no train split: %d of its judged queries (%.0f%%, queries.auto_holdout_fraction) "
                 "are held out of mining for evaluation", collection or "the collection", n_held,
                 100 * qc.auto_holdout_fraction)
    overlap = sorted(set(mined_splits) & set(guard_splits))
    if overlap:
        warnings.append(f"split(s) {overlap} are mined and also the evaluation set: every query of them "
                        "is flagged as leakage")
    if qc.generate and qc.few_shot and qrels is None:
        warnings.append("queries.few_shot needs qrels (the stage's qrels input): no examples used")

    @functools.cache
    def _hybrid():
        """The retrieval stage's retriever exactly as configured (cfg.retrieval), built once for the
        extractive sampling and the round trip; its indexes persist in the content-addressed store
        under <work_dir>/indexes, where the retrieve stage finds them."""
        from grouprank.first_stage.hybrid import HybridRetriever
        return HybridRetriever(documents, cfg, cfg.work_path)

    generated: list[dict] = []
    if qc.generate:
        if documents is None:
            raise UserError("queries.generate needs the documents table")
        generated, info = generate(cfg, documents, existing, qrels, evals, client=client, collection=collection,
                                   progress=progress)
        report["generation"] = info
    if qc.extract_docs:
        if documents is None:
            raise UserError("queries.extract_docs needs the documents table")
        extracted, info = extract(cfg, documents, existing, qrels, evals, collection=collection,
                                  search=lambda texts, k: _hybrid().search(texts, k))
        report["extraction"] = info
        log.info("mine_queries: %d extractive queries from %d sampled documents", info["queries"], info["sampled_docs"])
        generated = generated + extracted
    records = existing + generated
    sources.check_unique_ids(records)
    needs_embed = bool(records) and (bool(evals) or bool(generated) or qc.dedup_existing == "near")
    if embed is None and needs_embed:
        from .embed import default_embedder
        embed = default_embedder(cfg, cache_dir=cfg.work_path / "models")
    needs_rt = qc.roundtrip and any(r["source"] == "generated" and r["decision"] == "kept" for r in records)
    if rank_fn is None and needs_rt:
        rank_fn = _hybrid().rank_of
    report["filters"] = apply_filters(records, evals, embed=embed, rank_fn=rank_fn, cfg=cfg)
    report.update(summarize(records))
    if warnings:
        report["warnings"] = warnings
    report["wall_s"] = round(time.perf_counter() - t0, 3)
    table = QUERIES.from_records(records)
    return table, report
