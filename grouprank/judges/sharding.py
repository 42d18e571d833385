"""The judge stage's shard plan: its LLM judges' requests, in shards of `judges.shard_queries`
queries (each query with its whole candidate pool, so a listwise window or a groupwise group never
spans two shards).

A shard runs the LLM judges on its queries' pools and keeps nothing but their answers, which land in
the run's LLM cache (`llm.cache_mode: per_writer` on a cluster: one file per worker process, read as
one). The stage's own run is the merge: it judges the whole pool as an unsharded run does and finds
every answer a shard received in the cache, so it sends only what no shard got (a failed request,
an unfinished shard) and its judgments are the unsharded run's. Prompts depend only on their query's
pool and the seed (groupwise groups: `grouprank.seeded_rng`), never on which shard holds the query.

Not sharded: the local judge (one pass over the pooled documents, in the merge) and judges with
`select: uncertain` (their budget is over the whole pool). Shards read endpoint keys from their
environment variables (`llm.endpoints[].api_key_env`): a key from a Prefect Secret reaches the merge
only, so a cluster's workers need the variable set.
"""
from __future__ import annotations


def _sharded_judges(cfg) -> list[str]:
    return [j.id for j in cfg.judges.judges if j.kind != "local" and j.select == "all"]


def _query_ids(candidates) -> list[str]:
    return sorted({str(q) for q in candidates.column("query_id").to_pylist()})


def plan(cfg, inputs: dict) -> list[dict]:
    """Shards of `judges.shard_queries` queries (sorted ids) for the LLM judges; [] when unset, on a
    dry run, with no judge to shard or one shard only."""
    jc = cfg.judges
    judges = _sharded_judges(cfg)
    if not jc.shard_queries or jc.dry_run or not judges:
        return []
    n = len(_query_ids(inputs["candidates"]))
    if n <= jc.shard_queries:
        return []
    return [{"judges": judges, "first": lo, "count": min(jc.shard_queries, n - lo), "queries": n}
            for lo in range(0, n, jc.shard_queries)]


def run_shard(params: dict, cfg, inputs: dict) -> dict:
    """Judge one shard's queries with the planned LLM judges: their answers go to the LLM cache."""
    from .base import JudgePool
    from .runner import run_judges
    qids = _query_ids(inputs["candidates"])
    if len(qids) != params["queries"]:
        raise ValueError(f"the candidates are not the ones the shard plan was made for ({len(qids)} queries, "
                         f"plan: {params['queries']})")
    mine = qids[params["first"]:params["first"] + params["count"]]
    pool = JudgePool.from_tables(inputs["candidates"], inputs["documents"], inputs["mined_queries"],
                                 max_per_query=cfg.judges.max_per_query, query_ids=mine,
                                 max_query_chars=cfg.prompts.max_query_chars)
    rows, usage = run_judges(cfg, pool, only=list(params["judges"]))
    return {"queries": len(mine), "pairs": pool.n_pairs,
            "failed": sum(r["status"] == "failed" for r in rows),
            "calls": sum(int(u.get("calls", 0)) for u in usage.values()),
            "cached_calls": sum(int(u.get("cached_calls", 0)) for u in usage.values())}
