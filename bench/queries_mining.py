"""Query-mining numbers on SciFact: leakage guard (train claims vs the test claims) and the
round-trip keep rate of generated queries over the full corpus.

    python bench/queries_mining.py --out bench/results/queries_mining.json [--docs 100] [--corpus-limit N]

Generation runs through the real HTTP path (LLMClient -> local OpenAI-compatible server with fault
injection -> tests.support.query_responder, a deterministic *extractive stand-in*, not an LLM):
its keep rate says how the filter behaves, not how good LLM queries are. The hybrid index is
persisted under --work-dir, so a rerun only pays for the queries.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import setup, write_report  # noqa: E402  (bench/_common.py)

setup("queries_mining")


def leakage_numbers(c, work: Path, embed) -> dict:
    from grouprank.config import RunConfig
    from grouprank.queries.mine import mine_queries
    from grouprank.queries.textsim import lexical_similarity
    cfg = RunConfig.model_validate({"work_dir": str(work / "leak")})
    t = time.perf_counter()
    table, report = mine_queries(cfg, c.documents, c.queries, c.qrels, collection=c.name, embed=embed)
    wall = time.perf_counter() - t
    rows = table.to_pylist()
    test = {q["query_id"]: q["text"] for q in c.queries_for("test").to_pylist()}
    ev: dict[str, set] = {}
    for r in c.qrels.to_pylist():
        ev.setdefault(r["query_id"], set()).add(r["doc_id"])
    flagged = [r for r in rows if r["decision"] == "leakage"]
    shared = 0
    negation_like = 0
    for r in flagged:
        eid = r["decision_detail"].split("eval=")[1].split()[0]
        shared += bool(ev.get(r["query_id"], set()) & ev.get(eid, set()))
        lex, _ = lexical_similarity(r["text"], test[eid])
        negation_like += lex >= 0.85
    test_docs = set().union(*(ev.get(q, set()) for q in test))
    same_paper = [r for r in rows if ev.get(r["query_id"], set()) & test_docs]
    return {"train_claims": len(rows), "flagged": len(flagged), "by_via": report["filters"]["leakage"]["by_via"],
            "flagged_sharing_evidence_with_matched_test_claim": shared,
            "flagged_lexical_ge_0.85": negation_like,
            "train_claims_citing_a_test_paper": len(same_paper),
            "of_which_kept": sum(r["decision"] == "kept" for r in same_paper),
            "kept": report["kept"], "decisions": report["decisions"], "wall_s": round(wall, 2)}


def generation_numbers(c, work: Path, embed, n_docs: int, corpus_limit: int | None, seed: int) -> dict:
    from grouprank.config import RunConfig
    from tests.support.fake_openai_server import start_local_server
    from grouprank.queries.mine import mine_queries
    docs = c.documents if corpus_limit is None else c.documents.slice(0, corpus_limit)
    with start_local_server("tests.support.query_responder:respond", seed=seed,
                            faults={"malformed": 0.05, "truncated": 0.05, "500": 0.05}) as srv:
        cfg = RunConfig.model_validate({
            "work_dir": str(work / "gen"), "seed": seed,
            "queries": {"generate": True, "generate_docs": n_docs, "splits": [], "leakage_eval_splits": ["test"],
                        "sampling": "length_stratified", "roundtrip_depth": 200},
            "llm": {"endpoints": [{"name": "local", "base_url": srv.base_url, "model": "extractive-standin",
                                   "max_concurrency": 16, "backoff_base_s": 0.01, "backoff_max_s": 0.1}]}})
        t = time.perf_counter()
        table, report = mine_queries(cfg, docs, c.queries, c.qrels, collection=c.name, embed=embed)
        wall = time.perf_counter() - t
        server = srv.stats(detail=False)
    rows = table.to_pylist()
    ranks = [r["roundtrip_rank"] for r in rows if r["decision"] not in ("parse_error", "generation_failed")]
    keep_at = {k: round(sum(1 for x in ranks if x is not None and x <= k) / max(1, len(ranks)), 4)
               for k in (1, 5, 10, 20, 50, 100, 200)}
    return {"corpus_docs": docs.num_rows, "sampled_docs": n_docs, "requests": len(rows),
            "with_text": len(ranks), "roundtrip": report["filters"]["roundtrip"], "keep_rate_at_k": keep_at,
            "decisions": report["decisions"], "leakage": report["filters"]["leakage"]["by_via"],
            "server": {k: server[k] for k in ("requests", "ok", "faults")},
            "timings_s": report["filters"]["timings_s"], "wall_s": round(wall, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--docs", type=int, default=100)
    ap.add_argument("--corpus-limit", type=int, default=None, help="use only the first N documents")
    ap.add_argument("--work-dir", default="/tmp/grouprank_bench_queries")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--skip-leakage", action="store_true")
    a = ap.parse_args()
    from grouprank.collections import load_collection
    from grouprank.queries.embed import default_embedder
    work = Path(a.work_dir)
    c = load_collection("scifact")
    embed = default_embedder()
    out = {"collection": "scifact", "embedder": embed.model_id}
    if not a.skip_leakage:
        out["leakage_train_vs_test"] = leakage_numbers(c, work, embed)
        print(json.dumps(out["leakage_train_vs_test"], indent=2), flush=True)
    out["generation"] = generation_numbers(c, work, embed, a.docs, a.corpus_limit, a.seed)
    print(json.dumps(out["generation"], indent=2))
    write_report(a.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
