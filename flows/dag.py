"""The body every flow shares: run the stages a flow targets (and the stages they need, from the
cache when nothing changed), in waves of independent stages, then publish the artifacts and write
the run summary. A flow run holds the work dir's lock (`grouprank.work_lock`) while it runs.

Resume: a finished stage's result is persisted with its cache key, so a rerun (after a crash, a
cancel, or with the same configuration) skips it; a stage that crashed half-way reruns, and its LLM
calls already answered come from the LLM client's own SQLite cache. A cached result whose output
files no longer match what the stage wrote (deleted, or overwritten by a run with another
configuration in the same work dir) is recomputed instead of trusted.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

from prefect import get_run_logger
from prefect.context import get_run_context

from grouprank.config import RunConfig

from grouprank.executor import stage_inputs, stale_outputs
from grouprank.stage_list import levels, plan
from grouprank.work_lock import work_dir_lock

from flows import artifacts
from flows.tasks import _library_logging, describe, ensure_llm_limit, stage_task


def _flow_run() -> tuple[str, str | None]:
    try:
        ctx = get_run_context()
        return f"{ctx.flow.name}/{ctx.flow_run.name}", str(ctx.flow_run.id)
    except Exception:
        return "?", None


def run_stages(config: RunConfig, targets: tuple[str, ...] | None, flow_label: str,
               summary_file: str | None = None) -> dict[str, Any]:
    """Run `targets` (None: every stage) and their prerequisites; returns the run summary."""
    cfg = config if isinstance(config, RunConfig) else RunConfig.model_validate(config)
    cfg.work_path.mkdir(parents=True, exist_ok=True)
    flow_name, _ = _flow_run()
    with work_dir_lock(cfg.work_path, command=f"Prefect flow {flow_name} ({flow_label})"):  # one writer per work dir
        return _run_stages(cfg, targets, flow_label, summary_file)


def _run_stages(cfg: RunConfig, targets: tuple[str, ...] | None, flow_label: str,
                summary_file: str | None) -> dict[str, Any]:
    log = get_run_logger()
    _library_logging()
    t_all = time.time()

    todo = plan(targets)
    log.info("%s: %d stage(s) for run %r on collection %r in %s: %s", flow_label, len(todo), cfg.name,
             cfg.data.collection, cfg.work_path, " -> ".join(
                 "[" + ", ".join(s.name for s in w) + "]" for w in levels(todo)))

    if any(st.needs_llm(cfg) for st in todo):
        limit = ensure_llm_limit()
        log.info("global concurrency limit %r: %d slots", "llm", limit)

    # a progress artifact for every stage that declares progress parts, updated while it runs
    progress_ids: dict[str, str] = {}
    if any(st.progress_parts for st in todo):
        from prefect.artifacts import create_progress_artifact
        for st in todo:
            if st.progress_parts:
                progress_ids[st.name] = str(create_progress_artifact(
                    progress=0.0, key=artifacts.artifact_key(artifacts.progress_kind(st.name), cfg.name),
                    description=f"{st.title or st.name}: waiting for upstream stages"))

    results: dict[str, dict] = {}
    records: list[dict] = []
    flow_name, flow_run_id = _flow_run()
    summary: dict[str, Any] = {"run": cfg.name, "flow": flow_name, "flow_run_id": flow_run_id,
                               "flow_pid": os.getpid(),
                               "collection": cfg.data.collection,
                               "work_dir": str(cfg.work_path), "stages": {}}

    def finish(failed: str | None = None) -> dict[str, Any]:
        summary["wall_s"] = round(time.time() - t_all, 2)
        summary["llm"] = llm_summary(cfg, summary["stages"])
        exp = (results.get("export") or {}).get("outputs", {}).get("export")
        if exp:
            summary["exports"] = exp
        path = cfg.work_path / (summary_file or f"flow_summary_{flow_label}.json")
        if not failed and path.exists() and records and all(r["state"] == "cached" for r in records):
            # a cached rerun made nothing: the summary of the run that made the outputs stays, this one goes beside it
            path = path.with_name(f"{path.stem}.cached_rerun.json")
        summary["summary_path"] = str(path)
        if failed:
            summary["failed"] = failed
        path.write_text(json.dumps(summary, indent=2, default=str))
        table = artifacts.stage_rows(records)
        qrels = (results.get("load") or {}).get("outputs", {}).get("qrels")
        try:
            summary["artifacts"] = artifacts.publish(summary, table, results, qrels)
        except Exception as e:  # never hide the run's own outcome behind a monitoring error
            log.warning("publishing artifacts failed: %s", e)
        return summary

    def submit(st, inputs, hashes, refresh=False):
        return stage_task(st, cfg, refresh=refresh).submit(
            st.name, cfg, inputs, hashes, progress_ids.get(st.name))

    for wave in levels(todo):
        futures = {}
        for st in wave:
            inputs, hashes = stage_inputs(st, results)
            futures[st.name] = (st, inputs, hashes, submit(st, inputs, hashes))
        for name, (st, inputs, hashes, fut) in futures.items():
            fut.wait()
            state = fut.state
            if not state.is_completed():
                records.append({"stage": name, "state": state.name.lower(), "seconds": 0, "stats": {}})
                summary["stages"][name] = {"state": state.name}
                finish(failed=name)
                fut.result()  # raises the stage's error: the flow run fails with it
                raise RuntimeError(f"stage {name} ended {state.name}")
            res = fut.result()
            cached = state.name == "Cached"
            if cached:
                stale = stale_outputs(res)
                if stale:
                    log.warning("%s: cached result's outputs changed on disk (%s): recomputing",
                                name, ", ".join(stale))
                    fut = submit(st, inputs, hashes, refresh=True)
                    res = fut.result()
                    cached = False
            results[name] = res
            if cached:
                log.info("%s: cached (skipped): %s", name, describe(res.get("stats", {})))
            if name in progress_ids:
                from prefect.artifacts import update_progress_artifact
                title = st.title or st.name
                update_progress_artifact(artifact_id=progress_ids[name], progress=100.0,
                                         description=f"{title}: done (cached)" if cached else f"{title}: done")
            records.append({"stage": name, "state": "cached" if cached else "ran",
                            "seconds": 0.0 if cached else res.get("wall_s", 0.0), "stats": res.get("stats", {}),
                            "model_lock_wait_s": 0.0 if cached else (res.get("stats") or {}).get("model_lock_wait_s")})
            summary["stages"][name] = {"state": "cached" if cached else "ran", "wall_s": res.get("wall_s"),
                                       "executor": res.get("executor"),
                                       "outputs": res.get("outputs", {}), "stats": res.get("stats", {})}
    out = finish()
    log.info("%s finished in %.1f s: %d ran, %d cached%s. Run summary: %s", flow_label, out["wall_s"],
             sum(r["state"] == "ran" for r in records), sum(r["state"] == "cached" for r in records),
             f"; exports in {out['exports']}" if out.get("exports") else "", out["summary_path"])
    return out


def stage_flow(stage, module: str):
    """The Prefect flow for one stage: runs it and the stages it needs (each skipped when its cached
    result is still valid). Named after the stage's command; `module`: where the flow object lives
    (the deployment entrypoint)."""
    from prefect import flow

    from flows.runners import make_task_runner
    name = stage.cli_name

    def body(config: RunConfig = RunConfig()) -> dict:
        return run_stages(config, (stage.name,), stage.name)

    body.__name__ = body.__qualname__ = name.replace("-", "_") + "_flow"
    body.__module__ = module
    body.__doc__ = (f"{(stage.help or stage.title or stage.name).rstrip('.')}.\n\n"
                    "Earlier stages come from the cache when nothing they depend on changed.")
    return flow(name=name, task_runner=make_task_runner(), log_prints=True)(body)


def llm_summary(cfg, stages: dict) -> dict[str, Any]:
    """The LLM endpoints of the run (name, model, managed model; never a URL or key) and the LLM
    calls each stage made, from the stages' own stats (`<judge>.calls`, `generation.llm_calls`;
    answers served from the LLM cache are counted apart)."""
    eps = [{"name": e.name, "model": e.model, **({"managed": e.managed} if getattr(e, "managed", None) else {})}
           for e in cfg.llm.endpoints]
    per_stage: dict[str, dict[str, int]] = {}
    for name, st in stages.items():
        stats = st.get("stats") or {}
        calls = sum(int(v) for k, v in stats.items()
                    if isinstance(v, (int, float)) and (k.endswith(".calls") or k.endswith(".llm_calls")))
        cached = sum(int(v) for k, v in stats.items()
                     if isinstance(v, (int, float)) and (k.endswith(".cached_calls") or k.endswith(".llm_cached")))
        if calls or cached:
            per_stage[name] = {"calls": calls, "cached_calls": cached}
    return {"endpoints": eps, "stages": per_stage, "calls": sum(v["calls"] for v in per_stage.values()),
            "cached_calls": sum(v["cached_calls"] for v in per_stage.values())}
