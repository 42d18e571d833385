"""Retrieval stage benchmark: quality of bm25 / dense / hybrid_minmax / hybrid_rrf on a collection's
judged queries, speed, the fast encoding backend against torch, and the stage's overhead over
calling bm25s + the encoder + faiss directly.

    .venv/bin/python bench/retrieval.py --collection scifact --out bench/results/retrieval_scifact.json

What is measured, and how (2 shared cores: every comparison is interleaved, never "A then B")
1. Encoding, torch vs fast backend: the corpus (or its first --ab-docs documents) is cut into
   chunks; each chunk is encoded by both backends back to back, the order alternating per chunk;
   fast_backend_speedup = sum(torch) / sum(fast) (wall clock); fast_backend_cpu_speedup: the same
   with process CPU seconds (the two differ by the time spent waiting for a core). The engines
   have different worker pools (torch: OpenMP; ONNX Runtime: its own pool, spinning off): the
   bench sets OMP_WAIT_POLICY=PASSIVE before torch loads (bench/_common.py) so that neither
   spins while idle; with torch's OpenMP workers spinning and ONNX Runtime's sleeping, the ratio
   on a shared machine measures the wait policies as much as the encoders. Both ratios fall
   steeply with machine load (host.loadavg_1m_* in the JSON): compare runs on an idle machine.
   A whole-corpus A/B also places both embeddings in the index store (`store_embeddings`) so
   step 3 reuses them.
2. Overhead: ABBA (raw, stage, stage, raw), each from scratch (fresh temporary work dir) with the
   `--overhead-backend` encoder (default the fast one, so four corpus encodes stay affordable)
   on the corpus (or its first --overhead-docs documents):
   raw = bm25s.tokenize + BM25.index + retrieve, the encoding engine's encode (docs, queries),
   faiss IndexFlatIP add + search; stage = `retrieve()` + `pool()` cold (hashing, sharded memmap
   encode, persisted indexes, union rescoring, fusion, tables). overhead_vs_raw = sum(stage)/sum(raw).
3. Quality: `retrieve()` with the torch encoder over the whole corpus (bm25, dense and both fusions
   from one candidate set), then the dense system with the fast backend:
   fast_backend_ndcg@10_delta. Full-corpus embeddings come from the store: from step 1, from
   `grouprank run --stages retrieve --shard-workers N` (or the flow on a cluster) beforehand
   (--wait-store waits for them), or encoded here.
Metrics: grouprank.evaluation.metrics.evaluate (ir-measures; nDCG@10 linear gain, R@100 rel >= 1).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, setup, write_report  # noqa: E402  (bench/_common.py)
from grouprank.first_stage.dense import BACKENDS  # noqa: E402  (light: numpy only)

setup("retrieval")  # before numpy / torch / onnxruntime load

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

MEASURES = ("nDCG@10", "R@100")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


EXCLUDED: dict = {}  # the collection's excluded ids (BRIGHT), removed from every run before scoring


PER_QUERY: dict = {}  # system -> measure -> {query_id: value}, for the paired significance vs bm25


def evaluate(run_df, qrels, system: str | None = None):
    try:
        from grouprank.evaluation.metrics import evaluate as ev
        from grouprank.evaluation.significance import per_query_values
        m, per = ev(run_df, qrels, MEASURES, excluded=EXCLUDED, per_query=True)
        if system:
            PER_QUERY[system] = per_query_values(per, MEASURES)
    except ImportError:  # fall back to ir_measures directly
        import ir_measures
        q = qrels.to_pandas().rename(columns={"grade": "relevance"})[["query_id", "doc_id", "relevance"]]
        m = {str(k): v for k, v in ir_measures.calc_aggregate([ir_measures.parse_measure(x) for x in MEASURES],
                                                              q, run_df).items()}
    return {"ndcg@10": round(float(m["nDCG@10"]), 4), "recall@100": round(float(m["R@100"]), 4)}


def judged_queries(coll, split):
    qrels = coll.qrels_for(split)
    judged = set(qrels["query_id"].to_pylist())
    q = coll.queries_for(split)
    q = q.filter(pc.is_in(q["query_id"], pa.array(sorted(judged))))
    return q, qrels


def ab_encode(texts, enc_a, enc_b, chunk=256):
    """Interleaved timing of two encoders over the same texts. Returns (emb_a, emb_b, t_a, t_b,
    cpu_a, cpu_b): wall and process CPU seconds of each."""
    enc_a.encode_documents(texts[:8])  # load + warm both before timing
    enc_b.encode_documents(texts[:8])
    emb, wall, cpu = ([], []), [0.0, 0.0], [0.0, 0.0]
    for i, s in enumerate(range(0, len(texts), chunk)):
        part = texts[s:s + chunk]
        order = [(enc_a, 0), (enc_b, 1)] if i % 2 == 0 else [(enc_b, 1), (enc_a, 0)]
        for enc, which in order:
            c, t = time.process_time(), time.perf_counter()
            e = enc.encode_documents(part)
            wall[which] += time.perf_counter() - t
            cpu[which] += time.process_time() - c
            emb[which].append(e)
        if i % 4 == 0:
            log(f"  A/B chunk {i + 1}/{-(-len(texts) // chunk)}: torch {wall[0]:.1f}s fast {wall[1]:.1f}s")
    return np.vstack(emb[0]), np.vstack(emb[1]), wall[0], wall[1], cpu[0], cpu[1]


def raw_run(texts, qtexts, encoder_backend, rcfg, depth):
    """bm25s + the encoding engine + faiss, called directly; the same inputs as the stage."""
    import bm25s
    import faiss
    import Stemmer
    t0 = time.perf_counter()
    stemmer = Stemmer.Stemmer("english")
    ctok = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)
    bm = bm25s.BM25(k1=rcfg.bm25.k1, b=rcfg.bm25.b, method=rcfg.bm25.method)
    bm.index(ctok, show_progress=False)
    qtok = bm25s.tokenize(qtexts, stopwords="en", stemmer=stemmer, show_progress=False)
    bm.retrieve(qtok, k=min(depth, len(texts)), show_progress=False)
    emb = encoder_backend.encode(texts, rcfg.batch_size, False)
    qemb = encoder_backend.encode(qtexts, rcfg.batch_size, False)
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(np.ascontiguousarray(emb, dtype=np.float32))
    index.search(np.ascontiguousarray(qemb, dtype=np.float32), min(depth, len(texts)))
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from grouprank.commands.collection_args import add_collection_args
    add_collection_args(ap, quarantine=False)
    ap.add_argument("--out", required=True, help="JSON report path")
    ap.add_argument("--split", default="auto", help="judged query split scored (default auto: test when the "
                    "collection has one, else all judged queries)")
    ap.add_argument("--work-dir", default=str(ROOT / "grouprank_output" / "bench_retrieval"),
                    help="persistent index store for the quality runs (reused across bench runs)")
    ap.add_argument("--fast-backend", default="onnx-int8", choices=[b for b in BACKENDS if b != "torch"])
    ap.add_argument("--quality-backend", default="torch", choices=list(BACKENDS),
                    help="dense backend of the quality systems (default torch, the reference); with the fast "
                         "backend here, fast_backend_ndcg@10_delta is not measured")
    ap.add_argument("--overhead-backend", default=None, help="encoder for the overhead runs (default: --fast-backend)")
    ap.add_argument("--overhead-reps", type=int, default=2, help="ABBA repetitions pairs (2 = raw,stage,stage,raw)")
    ap.add_argument("--overhead-docs", type=int, default=None,
                    help="run the overhead comparison on the first N documents (default: all)")
    ap.add_argument("--dense-chunking", choices=["none", "maxp"], default="none",
                    help="dense documents whole (truncated to the window) or as passages scored by the best one "
                         "(retrieval.dense_chunking; use it with --no-overhead: the raw baseline encodes whole texts)")
    ap.add_argument("--no-encode-timing", action="store_true", help="skip the torch/fast A/B encode")
    ap.add_argument("--no-overhead", action="store_true")
    ap.add_argument("--chunk", type=int, default=256, help="A/B chunk size (documents)")
    ap.add_argument("--ab-docs", type=int, default=None,
                    help="time torch vs fast on the first N documents only (default: the whole corpus, whose "
                         "embeddings then seed the store); the quality runs take full-corpus embeddings from the "
                         "store (pre-encode them with `grouprank run --stages retrieve --shard-workers N`) or encode them")
    ap.add_argument("--wait-store", type=float, default=0,
                    help="seconds to wait for pre-encoded embeddings (a sharded retrieve run) to complete")
    args = ap.parse_args(argv)

    from grouprank.config import RetrievalConfig
    from grouprank.first_stage.dense import DenseEncoder
    from grouprank.first_stage.hybrid import retrieve, store_embeddings
    from grouprank.first_stage.pooling import pool
    from grouprank.text import document_texts

    from grouprank.commands.collection_args import describe, load_from_args
    from grouprank.queries.sources import AUTO, default_split, query_splits
    coll = load_from_args(args)
    args.collection = coll.name
    if args.split == AUTO:
        d = default_split(query_splits(coll.queries), "evaluate")
        args.split = d[0] if d else None
    work = Path(args.work_dir) / args.collection
    work.mkdir(parents=True, exist_ok=True)
    EXCLUDED.update(coll.excluded)
    queries, qrels = judged_queries(coll, args.split)
    if queries.num_rows == 0:
        raise SystemExit(f"no judged queries in split {args.split!r} of {args.collection} (it has {coll.splits})")
    docs = coll.documents
    rcfg = RetrievalConfig(dense_chunking=args.dense_chunking)
    ids, texts = document_texts(docs, rcfg.include_title)
    log(f"{args.collection}: {len(ids)} docs, {queries.num_rows} judged {args.split} queries")
    cache = work / "models"
    torch_enc = DenseEncoder(backend="torch", batch_size=rcfg.batch_size, max_seq_length=rcfg.max_seq_length,
                             cache_dir=cache)
    fast_enc = DenseEncoder(backend=args.fast_backend, batch_size=rcfg.batch_size,
                            max_seq_length=rcfg.max_seq_length, cache_dir=cache)
    out: dict = {"collection": args.collection, "source": describe(args), "split": args.split or "all",
                 "n_docs": len(ids), "excluded_ids": sum(len(v) for v in coll.excluded.values()),
                 "n_queries": queries.num_rows, "systems": {}, "timing": {}, "config": {
                     "depth": rcfg.depth, "bm25": list(rcfg.bm25.model_dump().values()),
                     "dense_model": torch_enc.model_id, "fast_backend": fast_enc.model_id,
                     "index": rcfg.index.model_dump(), "bm25_weight": rcfg.bm25_weight, "rrf_k": rcfg.rrf_k,
                     "union_rescore": rcfg.union_rescore, "include_title": rcfg.include_title,
                     "dense_chunking": rcfg.dense_chunking},
                 "host": {}}
    timing = out["timing"]

    # 1. torch vs fast encoding, interleaved (the whole corpus: seeds the store for step 3)
    if not args.no_encode_timing:
        log("[1] A/B encoding torch vs", args.fast_backend)
        ab_texts = texts[:args.ab_docs] if args.ab_docs else texts
        e_t, e_f, t_t, t_f, c_t, c_f = ab_encode(ab_texts, torch_enc, fast_enc, args.chunk)
        timing["ab_docs"] = len(ab_texts)
        timing["dense_encode_docs_per_s"] = round(len(ab_texts) / t_t, 1)
        timing["fast_encode_docs_per_s"] = round(len(ab_texts) / t_f, 1)
        timing["fast_backend_speedup"] = round(t_t / t_f, 3)
        timing["fast_backend_cpu_speedup"] = round(c_t / c_f, 3)
        timing["ab_wall_s"] = {"torch": round(t_t, 2), "fast": round(t_f, 2)}
        timing["ab_cpu_s"] = {"torch": round(c_t, 2), "fast": round(c_f, 2)}
        timing["fast_backend_cosine_to_torch"] = {"mean": round(float((e_t * e_f).sum(1).mean()), 5),
                                                  "min": round(float((e_t * e_f).sum(1).min()), 5)}
        if len(ab_texts) == len(texts):
            store_embeddings(docs, rcfg, work, torch_enc.model_id, e_t)
            store_embeddings(docs, rcfg, work, fast_enc.model_id, e_f)
        log(f"    torch {t_t:.1f}s, fast {t_f:.1f}s -> speedup {t_t / t_f:.2f}x")

    # 2. overhead vs raw, ABBA, cold, same encoder engine
    if not args.no_overhead:
        ob = args.overhead_backend or args.fast_backend
        oenc = DenseEncoder(backend=ob, batch_size=rcfg.batch_size, max_seq_length=rcfg.max_seq_length,
                            cache_dir=cache)
        engine = oenc._load()  # the engine both sides call (SentenceTransformer wrapper / ORT session)
        oenc.encode_documents(texts[:8])
        qtexts = [str(x) for x in queries["text"].to_pylist()]
        odocs = docs if not args.overhead_docs else docs.slice(0, args.overhead_docs)
        otexts = document_texts(odocs, rcfg.include_title)[1]
        log(f"[2] overhead vs raw ({ob}), ABBA x{args.overhead_reps}, {len(otexts)} docs")
        raw_t, stage_t, stage_detail = [], [], []
        for rep in range(args.overhead_reps):
            for which in (("raw", "stage") if rep % 2 == 0 else ("stage", "raw")):
                if which == "raw":
                    raw_t.append(raw_run(otexts, qtexts, engine, rcfg, rcfg.depth))
                else:
                    tmp = Path(tempfile.mkdtemp(prefix="stage-", dir=work))
                    try:
                        t = time.perf_counter()
                        r = retrieve(odocs, queries, rcfg, tmp, encoder=oenc)
                        pool(r, rcfg)
                        stage_t.append(time.perf_counter() - t)
                        stage_detail.append({k: round(v, 3) for k, v in r.timings.items()})
                    finally:
                        shutil.rmtree(tmp, ignore_errors=True)
                log(f"    {which}: {(raw_t if which == 'raw' else stage_t)[-1]:.2f}s")
        out["overhead_vs_raw"] = round(sum(stage_t) / sum(raw_t), 3)
        timing["overhead"] = {"backend": ob, "docs": len(otexts), "raw_s": [round(x, 2) for x in raw_t],
                              "stage_s": [round(x, 2) for x in stage_t], "stage_breakdown_s": stage_detail[-1]}

    if args.wait_store:
        from grouprank.first_stage.store import IndexStore, corpus_fingerprint, stable_key
        ch = corpus_fingerprint(ids, texts)
        st = IndexStore(work / "indexes")
        need = (fast_enc,) if args.quality_backend != "torch" else (torch_enc, fast_enc)
        keys = [stable_key("emb", ch, e.model_id) for e in need]
        deadline = time.time() + args.wait_store
        while not all(st.is_complete("emb", k) for k in keys) and time.time() < deadline:
            time.sleep(10)
        log(f"    store complete: {[st.is_complete('emb', k) for k in keys]}")

    # BM25 indexing of the full corpus (cheap; the stage may reuse a persisted index below)
    from grouprank.first_stage.bm25 import BM25Retriever
    t = time.perf_counter()
    BM25Retriever(**rcfg.bm25.model_dump()).index(ids, texts)
    timing["bm25_index_s"] = round(time.perf_counter() - t, 3)

    # 3. quality (torch = the reference model); bm25/dense/both fusions from one candidate set
    log("[3] quality runs")
    qenc = torch_enc if args.quality_backend == "torch" else \
        (fast_enc if args.quality_backend == args.fast_backend else
         DenseEncoder(backend=args.quality_backend, batch_size=rcfg.batch_size,
                      max_seq_length=rcfg.max_seq_length, cache_dir=cache))
    out["config"]["quality_backend"] = qenc.model_id
    res = retrieve(docs, queries, rcfg, work, encoder=qenc, excluded=coll.excluded)
    nq = queries.num_rows
    systems = out["systems"]
    systems["bm25"] = evaluate(res.run("bm25"), qrels, "bm25")
    systems["dense"] = evaluate(res.run("dense"), qrels, "dense")
    systems["hybrid_minmax"] = evaluate(res.with_fusion("minmax").run(), qrels, "hybrid_minmax")
    systems["hybrid_rrf"] = evaluate(res.with_fusion("rrf").run(), qrels, "hybrid_rrf")
    if PER_QUERY:  # each system vs bm25, paired per query (t-test, Wilcoxon, 95% CI of the difference)
        from grouprank.evaluation.significance import compare
        out["significance"] = compare(PER_QUERY, "bm25", MEASURES)
    # the same fusions without union rescoring (missing score = min / no RRF term), for reference
    res_nu = retrieve(docs, queries, rcfg.model_copy(update={"union_rescore": False}), work, encoder=qenc,
                      excluded=coll.excluded)
    extra = out.setdefault("extra_systems", {})
    extra["hybrid_minmax_no_union_rescore"] = evaluate(res_nu.with_fusion("minmax").run(), qrels)
    extra["hybrid_rrf_no_union_rescore"] = evaluate(res_nu.with_fusion("rrf").run(), qrels)
    for w in (0.3, 0.4, 0.6):
        extra[f"hybrid_minmax_w{w}"] = evaluate(res.with_fusion("minmax", bm25_weight=w).run(), qrels)
    out["long_texts"] = res.long_texts  # documents over the dense window (truncated unless maxp)
    cands = pool(res, rcfg)
    out["pool"] = {"rows": cands.num_rows, "per_query": round(cands.num_rows / max(nq, 1), 2)}
    tm = res.timings
    timing["stage_reused"] = res.reused
    timing["queries_per_s"] = {
        "bm25": round(nq / max(tm.get("bm25_search_s", 0), 1e-9), 1),
        "dense": round(nq / max(tm.get("query_encode_s", 0) + tm.get("dense_search_s", 0), 1e-9), 1),
        "hybrid": round(nq / max(tm["search_s"] + tm["fusion_s"], 1e-9), 1)}
    timing["stage_search_breakdown_s"] = {k: round(tm[k], 3) for k in (
        "query_encode_s", "dense_search_s", "bm25_search_s", "union_rescore_s", "search_s", "fusion_s") if k in tm}

    if qenc is torch_enc:
        res_fast = retrieve(docs, queries, rcfg, work, encoder=fast_enc, excluded=coll.excluded)
        fast_dense = evaluate(res_fast.run("dense"), qrels)
        extra[f"dense_{args.fast_backend}"] = fast_dense
        timing["fast_backend_ndcg@10_delta"] = round(fast_dense["ndcg@10"] - systems["dense"]["ndcg@10"], 4)
        timing["fast_backend_recall@100_delta"] = round(fast_dense["recall@100"] - systems["dense"]["recall@100"], 4)
    else:
        timing["fast_backend_ndcg@10_delta"] = None  # the quality systems already use a non-torch backend

    write_report(args.out, out, key="host")
    if out.get("significance"):
        for name, res_m in out["significance"]["systems"].items():
            print("  ".join([f"{name} vs bm25:"] + [
                f"{m} {r['mean_diff']:+.4f} (95% CI {r['ci95'][0]:+.4f}..{r['ci95'][1]:+.4f}, p={r['p_ttest']}, "
                f"{r['n']} queries)" for m, r in res_m.items() if r.get("ci95")]))
    print(json.dumps({"collection": out["collection"], "systems": systems, "timing": {
        k: timing.get(k) for k in ("bm25_index_s", "dense_encode_docs_per_s", "queries_per_s", "fast_backend_speedup",
                                   "fast_backend_cpu_speedup", "fast_backend_ndcg@10_delta")}, "overhead_vs_raw": out.get("overhead_vs_raw")},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
