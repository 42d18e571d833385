"""The body every flow shares: run the stages a flow targets (and the stages they need), in waves of
independent stages, one Prefect task per stage, then publish the artifacts and write the run
summary. A flow run holds the work dir's lock (`grouprank.work_lock`) while it runs.

Reuse and resume are the runner core's (`grouprank.executor`): each task asks it whether the
stage's finished record (`<work_dir>/_stages/`, the store `grouprank run` uses too) still holds,
and ends "Cached" without work when it does; a stage that crashed half-way reruns, and its LLM
calls already answered come from the LLM client's own SQLite cache. The run summary is the core's
(`executor.summarise`), so both runners report the same facts.
"""
from __future__ import annotations

import os
import time
from typing import Any

from prefect import get_run_logger
from prefect.context import get_run_context

from grouprank import executor
from grouprank.config import RunConfig
from grouprank.stage_list import levels, plan
from grouprank.work_lock import work_dir_lock

from flows import artifacts
from flows.tasks import _library_logging, ensure_llm_limit, shard_task, stage_task


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
        return _FlowRun(cfg, flow_label, summary_file or f"flow_summary_{flow_label}.json").run(plan(targets))


class _FlowRun:
    """One flow run's stages: submitted wave by wave, their records and states kept for the summary."""

    def __init__(self, cfg: RunConfig, label: str, summary_file: str):
        self.cfg, self.label, self.summary_file = cfg, label, summary_file
        self.log = get_run_logger()
        self.records: dict[str, dict] = {}
        self.states: dict[str, str] = {}
        self.progress_ids: dict[str, str] = {}
        self.t0 = time.time()

    def run(self, todo: list) -> dict[str, Any]:
        _library_logging()
        cfg = self.cfg
        self.log.info("%s: %d stage(s) for run %r on collection %r in %s: %s", self.label, len(todo), cfg.name,
                      cfg.data.collection, cfg.work_path, " -> ".join(
                          "[" + ", ".join(s.name for s in w) + "]" for w in levels(todo)))
        if any(st.needs_llm(cfg) for st in todo):
            self.log.info("global concurrency limit %r: %d slots", "llm", ensure_llm_limit())
        self._progress_artifacts(todo)
        for wave in levels(todo):
            futures = {st.name: (st, self._submit(st)) for st in wave}
            for name, (st, fut) in futures.items():
                self._collect(st, fut)
        out = self._finish()
        ran = sum(s == "ran" for s in self.states.values())
        self.log.info("%s finished in %.1f s: %d ran, %d cached%s. Run summary: %s", self.label, out["wall_s"],
                      ran, len(self.states) - ran,
                      f"; exports in {out['exports']}" if out.get("exports") else "", out["summary_path"])
        return out

    def _progress_artifacts(self, todo: list) -> None:
        """A progress artifact for every stage that declares progress parts, updated while it runs."""
        from prefect.artifacts import create_progress_artifact
        for st in todo:
            if st.progress_parts:
                self.progress_ids[st.name] = str(create_progress_artifact(
                    progress=0.0, key=artifacts.artifact_key(artifacts.progress_kind(st.name), self.cfg.name),
                    description=f"{st.title or st.name}: waiting for upstream stages"))

    def _submit(self, st):
        inputs, hashes = executor.stage_inputs(st, self.records)
        if st.sharding is not None:
            self._run_shards(st, inputs, hashes)
        return stage_task(st, self.cfg).submit(st.name, self.cfg, inputs, hashes, self.progress_ids.get(st.name))

    def _run_shards(self, st, inputs: dict[str, str], hashes: dict[str, str]) -> None:
        """The stage's shard plan through `grouprank.shards.run_all` (the one path `grouprank run`
        takes too), its pending shards mapped as tasks on the flow's task runner (threads, a Dask or a
        Ray cluster); the stage task then merges them. Nothing to do when the stage's record can be
        reused or every shard has its completion record."""
        from grouprank import shards
        key, rec = executor.reusable(st, self.cfg, hashes)
        if rec is not None:
            return
        try:
            shards.run_all(st, self.cfg, inputs, key, mapper=self._task_mapper(st))
        except shards.ShardError:  # the finished shards keep their records: a rerun redoes only the rest
            self.states[st.name] = "failed"
            self._finish(failed=st.name)
            raise

    def _task_mapper(self, st) -> "shards.Mapper":
        """A `shards.Mapper` that runs each pending shard as a Prefect task, with progress per shard."""
        from grouprank import shards

        def mapper(stage_name: str, cfg, input_paths: dict, pending) -> list[dict]:
            self.log.info("%s: %d pending shard(s), mapped on %s", stage_name, len(pending),
                          type(get_run_context().task_runner).__name__)
            futures = [(spec, shard_task(st).submit(stage_name, cfg, input_paths, spec.as_dict()))
                       for spec in pending]
            records, failed = [], []
            for spec, fut in futures:
                fut.wait()
                if not fut.state.is_completed():
                    failed.append(f"{spec.label}: {fut.state.message or fut.state.name}")
                    continue
                records.append(fut.result())
                if st.name in self.progress_ids:  # progress per shard in the UI
                    from prefect.artifacts import update_progress_artifact
                    update_progress_artifact(artifact_id=self.progress_ids[st.name],
                                             progress=100.0 * len(records) / len(pending),
                                             description=f"{st.title or st.name}: {len(records)}/{len(pending)} "
                                                         "pending shards done")
            if failed:
                raise shards.ShardError(f"stage {stage_name}: {len(failed)} of {len(pending)} shard(s) failed: "
                                        + "; ".join(failed[:5]))
            return records
        return mapper

    def _collect(self, st, fut) -> None:
        fut.wait()
        state = fut.state
        if not state.is_completed():
            self.states[st.name] = state.name.lower()
            self._finish(failed=st.name)
            fut.result()  # raises the stage's error: the flow run fails with it
            raise RuntimeError(f"stage {st.name} ended {state.name}")
        rec = fut.result()
        self.records[st.name], self.states[st.name] = rec, rec["state"]
        if st.name in self.progress_ids:
            from prefect.artifacts import update_progress_artifact
            title = st.title or st.name
            update_progress_artifact(artifact_id=self.progress_ids[st.name], progress=100.0,
                                     description=f"{title}: done ({rec['state']})" if rec["state"] == "cached"
                                     else f"{title}: done")

    def _finish(self, failed: str | None = None) -> dict[str, Any]:
        cfg = self.cfg
        flow_name, flow_run_id = _flow_run()
        summary = executor.summarise(cfg, self.records, self.states, extra={
            "flow": flow_name, "flow_run_id": flow_run_id, "flow_pid": os.getpid()})
        if failed:
            summary["failed"] = failed
            summary["stages"][failed] = {"state": self.states[failed]}
        summary["wall_s"] = round(time.time() - self.t0, 2)
        executor.write_summary(cfg, summary, self.summary_file, keep_maker=True)
        rows = artifacts.stage_rows([{"stage": n, "state": s["state"], "stats": s.get("stats") or {},
                                      "seconds": 0.0 if s["state"] == "cached" else s.get("wall_s") or 0.0,
                                      "model_lock_wait_s": None if s["state"] == "cached"
                                      else (s.get("stats") or {}).get("model_lock_wait_s")}
                                     for n, s in summary["stages"].items()])
        qrels = next((r["outputs"]["qrels"] for r in self.records.values() if "qrels" in r["outputs"]), None)
        try:
            summary["artifacts"] = artifacts.publish(summary, rows, self.records, qrels)
        except Exception as e:  # never hide the run's own outcome behind a monitoring error
            self.log.warning("publishing artifacts failed: %s", e)
        return summary


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
