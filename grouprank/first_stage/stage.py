"""Stage `retrieve`: BM25 + dense candidates for the kept mined queries, fused and pooled.

Outputs in <work_dir>/retrieve/: `candidates` (CANDIDATES: the pool), `pool_run` (the pool as a TREC
run), `run` (the full fused top-`depth` ranking as a TREC run), `retrieval_report`, and `indexes`
(indexes.json): the manifest of the indexes it used. Indexes persist in the content-addressed store
under <work_dir>/indexes (see `store`), where the query-mining round-trip filter and reruns find them
instead of rebuilding. The judge stage takes `indexes` as an input and opens the BM25 index and the
document embeddings it names (`indexes.open_indexes`) for the local judge; the manifest, a few
hundred bytes of keys, is what the executor fingerprints, not the index folders.
"""
from __future__ import annotations

import time

import pyarrow.compute as pc

from data_schemas import CANDIDATES, DOCUMENTS, QUERIES
from grouprank.atomic import write_json_atomic
from grouprank.stage import Sharding, Stage, StageContext, StageResult, TableOut, file, table

from . import sharding

INDEX_MANIFEST = "indexes.json"


def kept(queries):
    """The queries a downstream stage works on: decision == "kept" when the table has decisions."""
    if "decision" in queries.column_names:
        return queries.filter(pc.equal(queries["decision"], "kept"))
    return queries


def _splits_of(queries) -> list[str]:
    return sorted({str(s) for s in queries["split"].to_pylist() if s is not None}) \
        if "split" in queries.column_names else []


def _write_single_run(res, system: str, path) -> None:
    """One retriever's own top-`depth` list as a TREC run."""
    from grouprank.collections.trec import run_table, write_trec_run
    f = res.run(system)
    f = f.sort_values(["query_id", "score"], ascending=[True, False], kind="stable")
    ranks = f.groupby("query_id").cumcount() + 1
    recs = [{"query_id": q, "doc_id": d, "rank": int(r), "score": float(sc), "system": system}
            for q, d, r, sc in zip(f["query_id"], f["doc_id"], ranks, f["score"])]
    write_trec_run(run_table(recs), path, f"grouprank-{system}")


def retrieve_and_pool(cfg, documents, queries, out_dir, *, encoder=None, show_progress: bool = False,
                      query_source: str = "mined_queries", index_manifest: bool = False,
                      excluded=None, progress=None) -> StageResult:
    """Retrieve + pool `queries` (already filtered) over `documents`, writing the TREC runs and the
    report into `out_dir`; returns the CANDIDATES table and stats. `index_manifest`: also write
    `indexes.json` (`HybridRetriever.index_manifest()`) and return it as the `indexes` output.
    `excluded`: {query_id: doc ids} removed from every run and the pool (default: the configured
    collection's BRIGHT excluded ids)."""
    from grouprank.collections import excluded_from_config
    from grouprank.collections.trec import write_trec_run
    from grouprank.errors import UserError

    from .hybrid import retrieve
    from .pooling import pool
    t0 = time.perf_counter()
    splits = _splits_of(queries)
    if queries.num_rows == 0:
        raise UserError(f"no queries to retrieve for (source: {query_source}; query splits mined: "
                        f"{cfg.queries.splits}); name the split with --split (the collection's splits: "
                        "`grouprank collections stats`)")
    if documents.num_rows == 0:
        raise UserError("no documents to retrieve from")
    rc = cfg.retrieval
    if excluded is None:
        excluded = excluded_from_config(cfg)
    res = retrieve(documents, queries, cfg, cfg.work_path, encoder=encoder, show_progress=show_progress,
                   excluded=excluded, progress=progress)
    cands = pool(res, cfg, run_path=out_dir / "candidates.trec")
    write_trec_run(res.ranking, out_dir / "run.trec", f"grouprank-{rc.fusion}")
    _write_single_run(res, "bm25", out_dir / "run_bm25.trec")
    _write_single_run(res, "dense", out_dir / "run_dense.trec")
    report = {"queries": queries.num_rows, "query_source": query_source, "splits": splits,
              "documents": documents.num_rows, "excluded_removed": res.excluded_removed,
              "long_texts": res.long_texts,
              "fusion": rc.fusion, "depth": rc.depth, "candidates": cands.num_rows, "reused": res.reused,
              "keys": res.keys, "timings_s": {k: round(v, 3) for k, v in res.timings.items()},
              "wall_s": round(time.perf_counter() - t0, 3)}
    rpath = write_json_atomic(out_dir / "retrieval_report.json", report)  # (out_dir: also the bench's scratch folders)
    stats = {"queries": report["queries"], "splits": ",".join(splits), "documents": report["documents"],
             "candidates": cands.num_rows, "excluded_removed": res.excluded_removed,
             **{f"long_texts.{k}": v for k, v in res.long_texts.items()},
             "candidates_per_query": round(cands.num_rows / queries.num_rows, 2), "fusion": rc.fusion,
             **{f"reused.{k}": v for k, v in res.reused.items()},
             **{f"time.{k}": v for k, v in report["timings_s"].items()}, "wall_s": report["wall_s"]}
    # Parquet metadata holds what made the table, not timings: reruns write identical bytes
    meta = {k: v for k, v in report.items() if k not in ("timings_s", "wall_s", "reused")}
    outputs = {"candidates": TableOut(cands, {"config_hash": cfg.section_hash("retrieval"), "report": meta}),
               "pool_run": out_dir / "candidates.trec", "run": out_dir / "run.trec",
               "run_bm25": out_dir / "run_bm25.trec", "run_dense": out_dir / "run_dense.trec",
               "retrieval_report": rpath}
    if index_manifest:
        outputs["indexes"] = write_json_atomic(out_dir / INDEX_MANIFEST, res.retriever.index_manifest(),
                                               sort_keys=True)
    return StageResult(outputs, stats)


def run(inputs: dict, cfg, ctx: StageContext) -> StageResult:
    return retrieve_and_pool(cfg, inputs["documents"], kept(inputs["mined_queries"]), ctx.out_dir,
                             index_manifest=True, progress=ctx.progress)


def _cli_args(p) -> None:
    p.add_argument("--split", action="append", metavar="SPLIT",
                   help="retrieve for the collection's queries of this split (repeatable), mined without "
                        "the leakage guard, instead of queries.splits")


def _cli_overrides(args) -> dict:
    return {"queries.splits": args.split, "queries.leakage_eval_splits": []} if args.split else {}


def excluded_files(cfg) -> dict[str, str]:
    """BRIGHT's excluded ids filter this stage's runs: their file is in its cache key."""
    from grouprank.collections import excluded_files as files
    return files(cfg)


STAGE = Stage(
    name="retrieve", title="retrieve candidates", run=run, builds_models=True,
    progress_parts=lambda c: 1,  # the corpus encoding
    inputs=(table("documents", DOCUMENTS), table("mined_queries", QUERIES)),
    outputs=(table("candidates", CANDIDATES), file("pool_run", "candidates.trec"), file("run", "run.trec"),
             file("run_bm25", "run_bm25.trec", doc="BM25's own top-depth ranking (TREC run)"),
             file("run_dense", "run_dense.trec", doc="the dense retriever's own top-depth ranking (TREC run)"),
             file("retrieval_report", "retrieval_report.json"),
             file("indexes", INDEX_MANIFEST, doc="manifest of the persisted BM25 index and document embeddings "
                  "(store, keys, encoder model_id, corpus fingerprint); read by the judge stage")),
    reads=excluded_files, sections=("data", "retrieval", "seed"), timeout_s=24 * 3600,
    help="retrieve, fuse and pool candidates (BM25 + dense)", cli_args=_cli_args, cli_overrides=_cli_overrides,
    sharding=Sharding(plan=sharding.plan, run_shard=sharding.run_shard),  # the corpus encoding
)
