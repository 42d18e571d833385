"""`grouprank rerank`: rerank a TREC run or a candidates table with an LLM (groupwise / pointwise /
listwise, `grouprank.reranker.inference`). Training is the `train-reranker` stage command
(`grouprank.reranker.stage`)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub) -> None:
    from grouprank.config import add_config_args

    p = sub.add_parser("rerank", help="rerank a TREC run or candidates table with an LLM "
                                      "(groupwise / pointwise / listwise)",
                       description="Groupwise (GroupRank) reranking: shuffle the top-N candidates, cut them into "
                                   "ceil(N/c) groups, score the groups concurrently, average over passes, "
                                   "final = alpha*group/10 + (1-alpha)*minmax(first stage). Writes a TREC run.")
    add_config_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="TREC run file (qid Q0 docid rank score tag)")
    src.add_argument("--candidates", help="CANDIDATES (or RUNS) Parquet table")
    p.add_argument("--out", required=True, help="output TREC run file")
    from grouprank.commands.collection_args import add_collection_args
    add_collection_args(p)  # the collection giving query and document texts (default: data.collection)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the full traceback of an error")
    p.add_argument("--split", default=None, help="query split to read query texts from (default: all)")
    p.add_argument("--mode", choices=["groupwise", "pointwise", "listwise"], help="default: rerank.mode")
    p.add_argument("--backend", choices=["llm", "transformers"], help="default: rerank.backend")
    p.add_argument("--endpoint", help="llm.endpoints name (default: rerank.endpoint, else the first)")
    p.add_argument("--base-url", help="shortcut: an OpenAI-compatible base URL (makes a one-off endpoint)")
    p.add_argument("--model", help="model name for --base-url, or model path for --backend transformers")
    p.add_argument("--top", type=int, help="rerank each query's top N documents of the run (default: rerank.top)")
    p.add_argument("--group-size", type=int, help="documents per group in one LLM call (default: rerank.group_size)")
    p.add_argument("--passes", type=int, help="shuffled passes averaged per query (default: rerank.passes)")
    p.add_argument("--alpha", type=float, help="weight of the reranker's score against the first stage's "
                   "min-max score, 0..1 (default: rerank.alpha)")
    p.add_argument("--queries", type=int, help="only the first N queries (smoke runs)")
    p.add_argument("--report", help="write per-query calls/tokens and the summary as JSON here")
    p.add_argument("--eval", action="store_true", help="evaluate nDCG@10 against the collection's qrels")
    p.set_defaults(func=cmd_rerank)


def _endpoint(cfg, args):
    from grouprank.config import LLMEndpoint
    if args.base_url:
        return LLMEndpoint(name="cli", base_url=args.base_url, model=args.model or "local",
                           temperature=cfg.rerank.temperature, top_p=cfg.rerank.top_p,
                           max_tokens=cfg.rerank.max_tokens)
    from grouprank.llm.from_config import choose_endpoint
    return choose_endpoint(cfg, args.endpoint or cfg.rerank.endpoint, "grouprank rerank --backend llm",
                           " or give --base-url")


def cmd_rerank(args) -> int:
    from grouprank.config import config_from_args
    from grouprank.collections import read_trec_run, run_table, write_trec_run
    from grouprank.errors import UserError
    from grouprank.reranker.inference import candidates_from_table, llm_backend, rerank, transformers_backend
    from grouprank.text import document_text_map

    from grouprank.collections import load_from_config
    from grouprank.commands.collection_args import collection_overrides
    cfg = config_from_args(args, collection_overrides(args))
    rc = cfg.rerank
    mode = args.mode or rc.mode
    backend_kind = args.backend or rc.backend
    coll = load_from_config(cfg)
    if args.run:
        table = read_trec_run(args.run)
    else:
        import pyarrow.parquet as pq
        if not Path(args.candidates).exists():
            raise UserError(f"{args.candidates}: file not found")
        table = pq.read_table(args.candidates)
    if coll.excluded:  # BRIGHT: excluded ids never enter a reranked run
        import pyarrow as pa
        keep = [d not in coll.excluded.get(q, ()) for q, d in zip(table["query_id"].to_pylist(),
                                                                    table["doc_id"].to_pylist())]
        table = table.filter(pa.array(keep))
    cands = candidates_from_table(table)
    queries = dict(zip(coll.queries_for(args.split)["query_id"].to_pylist(),
                       coll.queries_for(args.split)["text"].to_pylist()))
    missing = [q for q in cands if q not in queries]
    if missing:
        print(f"grouprank rerank: {len(missing)} run queries have no text in {coll.name} (skipped), "
              f"e.g. {missing[:3]}", file=sys.stderr)
    cands = {q: c for q, c in cands.items() if q in queries}
    if args.queries:
        cands = dict(list(sorted(cands.items()))[:args.queries])
    doc_text = document_text_map(coll.documents)
    if backend_kind == "llm":
        backend = llm_backend(cfg, rc, stage="reranker", endpoint=_endpoint(cfg, args))
    else:
        path = args.model or rc.model_path
        if not path:
            raise UserError("--backend transformers needs --model PATH (or rerank.model_path)")
        backend = transformers_backend(rc, path)
    res = rerank(mode, cands, queries, doc_text, backend, top=args.top or rc.top,
                 group_size=args.group_size or rc.group_size, passes=args.passes or rc.passes,
                 alpha=rc.alpha if args.alpha is None else args.alpha, seed=cfg.seed, max_doc_chars=cfg.prompts.max_doc_chars,
                 window=rc.window, stride=rc.stride, system=f"grouprank-{mode}")
    write_trec_run(run_table(res.run), args.out)
    summary = dict(res.summary)
    if args.eval:
        from grouprank.evaluation.metrics import evaluate
        qrels = coll.qrels_for(args.split).to_pandas()[["query_id", "doc_id", "grade"]]
        qrels = qrels[qrels["query_id"].isin(cands)]  # the reranked queries only, not every judged one
        run_df = run_table(res.run).to_pandas()[["query_id", "doc_id", "score"]]
        first = table.to_pandas()
        first = first.rename(columns={"fused_score": "score"})[["query_id", "doc_id", "score"]]
        first = first[first["query_id"].isin(cands)]
        summary["eval"] = {"reranked": evaluate(run_df, qrels, measures=("nDCG@10",)),
                           "first_stage": evaluate(first, qrels, measures=("nDCG@10",))}
    print(json.dumps(summary, indent=2, default=str))
    if args.report:
        from grouprank.atomic import write_json_atomic
        write_json_atomic(args.report, {"summary": summary, "per_query": res.per_query})
    return 0

