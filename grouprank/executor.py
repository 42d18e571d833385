"""The runner core: everything that decides and records whether a stage runs, for every way of
running the pipeline (datatrove's shape: the local and the cluster executors share one per-rank
function).

- `execute(stage, cfg, inputs, input_hashes)`: the one per-stage step. Computes the stage's cache key
  (`grouprank.cache_keys`), reuses the finished record in the one record store (`grouprank.records`,
  `<work_dir>/_stages/`) when the key matches and its outputs are unchanged, else runs the stage
  (`grouprank.stage_run.run_stage`) and records it. Returns (record, "cached" | "ran").
- `summarise(cfg, records, states)`: the one run summary (stages, LLM calls, exports).
- `run_pipeline(cfg, targets)`: the in-process runner (`grouprank run`, the stage commands, the
  benches), holding the work dir's lock (`grouprank.work_lock`: one writer per work dir). The Prefect
  flows (`flows/dag.py`) drive the same `execute` from their tasks and the same `summarise`, so a
  stage finished by `grouprank run` is reused by `python -m flows synthesize` on the same work dir
  and the other way round. A crashed or killed run resumes at the first unfinished stage; LLM
  answers already paid for come from the LLM client's own cache when a stage reruns.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from grouprank import shards
from grouprank.config import RunConfig
from grouprank.records import RECORDS, load_record, save_record, stored_record  # noqa: F401  (the store)
from grouprank.stage import Stage
from grouprank.cache_keys import (ALL_SECTIONS, NOT_RESULT_ENV, RESULT_ENV, RESULT_LIBRARIES,  # noqa: F401
                                 cache_key, config_key, external_inputs, fingerprint, fingerprints,
                                 source_key, source_modules, stale_outputs)
from grouprank.stage_list import all_stages, plan, wiring_of
from grouprank.stage_run import read_inputs, run_stage, write_outputs  # noqa: F401  (write_outputs: re-exported)

log = logging.getLogger("grouprank.executor")


# --------------------------------------------------------------------------- one stage, any runner
def stage_inputs(stage: Stage, results: dict[str, dict]) -> tuple[dict[str, str], dict[str, str]]:
    """(input paths, input content hashes) for `stage` from upstream records."""
    paths, hashes = {}, {}
    for name, (src, out) in wiring_of(stage.name).items():
        rec = results.get(src) or {}
        if out in (rec.get("outputs") or {}):
            paths[name] = rec["outputs"][out]
            hashes[name] = rec["fingerprints"].get(out, "?")
    return paths, hashes


def reusable(stage: Stage, cfg: RunConfig, input_hashes: dict[str, str], *,
             out_dir: str | os.PathLike | None = None) -> tuple[str, dict | None]:
    """(cache key, the finished record to reuse or None). A record whose outputs lie outside
    `out_dir` (when given) is not reused: it was finished somewhere else."""
    key = cache_key(stage, cfg, input_hashes)
    rec = load_record(cfg, stage, key)
    if rec is not None and out_dir is not None and any(
            not Path(v).resolve().is_relative_to(Path(out_dir).resolve()) for v in rec["outputs"].values()):
        rec = None
    return key, rec


def execute(stage: Stage, cfg: RunConfig, inputs: dict[str, str], input_hashes: dict[str, str], *,
            refresh: bool = False, out_dir: str | os.PathLike | None = None,
            progress: Callable[..., None] | None = None, api_keys: dict[str, str] | None = None,
            overridden: dict[str, str] | None = None, looked_up: tuple[str, dict | None] | None = None,
            sharded: bool = True, shard_map: "shards.Mapper | None" = None) -> tuple[dict, str]:
    """Reuse the stage's finished record or run it and record it -> (record, "cached" | "ran").
    `refresh`: run even when a record could be reused; `overridden`: inputs fed from files;
    `looked_up`: what `reusable` just answered for these inputs. A stage that declares `sharding`
    first runs its pending shards (`grouprank.shards`) with `shard_map` (default: in this process,
    in order; a runner with workers passes its own), then its `run` merges them; `sharded=False`
    runs it unsharded."""
    key, rec = looked_up or reusable(stage, cfg, input_hashes, out_dir=out_dir)
    if rec is not None and not refresh:
        return rec, "cached"
    data = None
    if sharded and stage.sharding is not None:  # the plan and the merge read the inputs once between them
        data = read_inputs(stage, inputs)
    shard_facts = shards.run_all(stage, cfg, inputs, key, shard_map, data=data) if data is not None else None
    rec = run_stage(stage, cfg, inputs, progress=progress, api_keys=api_keys, out_dir=out_dir, data=data)
    if shard_facts is not None:
        rec["shards"] = shard_facts
    rec["input_hashes"] = dict(input_hashes)
    save_record(cfg, stage, key, rec, overridden)
    return rec, "ran"


# --------------------------------------------------------------------------- the run summary
def summarise(cfg: RunConfig, records: dict[str, dict], states: dict[str, str], *,
              extra: dict | None = None) -> dict[str, Any]:
    """The run summary: per stage (pipeline order) its state, time, outputs, stats and LLM calls;
    the run's LLM endpoints and calls; where the exported datasets are."""
    summary: dict[str, Any] = {"run": cfg.name, "collection": cfg.data.collection,
                               "work_dir": str(cfg.work_path), **(extra or {}), "stages": {}}
    every = all_stages()
    for name in [n for n in every if n in records] + [n for n in records if n not in every]:  # pipeline order
        rec = records[name]
        if rec is not None:
            summary["stages"][name] = {"state": states[name], "wall_s": rec.get("wall_s"),
                                       "outputs": rec["outputs"], "stats": rec["stats"],
                                       "llm": rec.get("llm") or {"calls": 0, "cached_calls": 0},
                                       **({"executor": rec["executor"]} if rec.get("executor") else {}),
                                       **({"shards": rec["shards"]} if rec.get("shards") else {})}
    summary["llm"] = llm_summary(cfg, summary["stages"])
    exports = [s["outputs"]["export"] for s in summary["stages"].values() if "export" in s["outputs"]]
    if exports:
        summary["exports"] = exports[0]
    return summary


def llm_summary(cfg: RunConfig, stages: dict) -> dict[str, Any]:
    """The LLM endpoints of the run (name, model, managed model; never a URL or key) and the LLM
    calls each stage's clients made (answers served from the LLM cache counted apart); a reused
    stage made the calls it recorded when it ran."""
    eps = [{"name": e.name, "model": e.model, **({"managed": e.managed} if getattr(e, "managed", None) else {})}
           for e in cfg.llm.endpoints]
    per_stage = {name: {"calls": int(st["llm"]["calls"]), "cached_calls": int(st["llm"]["cached_calls"])}
                 for name, st in stages.items() if st.get("llm") and (st["llm"]["calls"] or st["llm"]["cached_calls"])}
    return {"endpoints": eps, "stages": per_stage, "calls": sum(v["calls"] for v in per_stage.values()),
            "cached_calls": sum(v["cached_calls"] for v in per_stage.values())}


def write_summary(cfg: RunConfig, summary: dict, filename: str, *, keep_maker: bool = False) -> Path:
    """Write the summary into the work dir. `keep_maker`: when every stage was reused and a summary
    is already there, that one (of the run that made the outputs) stays and this goes beside it."""
    path = cfg.work_path / filename
    states = {s["state"] for s in summary["stages"].values()}
    if keep_maker and path.exists() and states == {"cached"} and not summary.get("failed"):
        path = path.with_name(f"{path.stem}.cached_rerun.json")
    summary["summary_path"] = str(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- in-process runner
class _Runner:
    """Brings targets up to date, make-style: a stage runs unless its stored record has the key its
    inputs and configuration give now and its outputs are unchanged. A stage last fed from files
    (`--<input> PATH`) keeps those inputs when a later command only needs its outputs."""

    def __init__(self, cfg, targets, overrides, refresh, out_dirs, log_fn, progress, shard_opts):
        self.cfg, self.targets, self.overrides, self.shard_opts = cfg, set(targets), overrides, shard_opts
        self.refresh, self.out_dirs, self.log, self.progress = refresh, out_dirs, log_fn, progress
        self.every = all_stages()
        self.results: dict[str, dict | None] = {}
        self.states: dict[str, str] = {}

    def ensure(self, name: str, run: bool = True) -> dict | None:
        """The stage's current record, running it (and what it needs) when `run`; None when it is not
        up to date and may not run."""
        if name in self.results and (self.results[name] is not None or not run):
            return self.results[name]
        st, cfg = self.every[name], self.cfg
        overrides = dict(self.overrides.get(name) or {})
        if not overrides and name not in self.targets:
            stored = stored_record(cfg, st) or {}
            overrides = {k: v for k, v in (stored.get("overridden") or {}).items()
                         if fingerprint(v) == (stored.get("input_hashes") or {}).get(k)}
        paths, hashes = {}, {}
        for port in st.inputs:
            if port.name in overrides:
                paths[port.name], hashes[port.name] = str(overrides[port.name]), fingerprint(overrides[port.name])
                continue
            if port.name not in wiring_of(name):  # an optional input no stage produces: from a file only
                continue
            src, out = wiring_of(name)[port.name]
            # an optional input of a stage fed from files comes only from an up-to-date producer
            rec = self.ensure(src, run=run and not (port.optional and overrides))
            if rec is None:
                if port.optional:
                    continue
                self.results[name] = None
                return None
            if out in rec["outputs"]:
                paths[port.name], hashes[port.name] = rec["outputs"][out], rec["fingerprints"][out]
        out_dir = self.out_dirs.get(name)
        refresh = self.refresh and name in self.targets
        found = reusable(st, cfg, hashes, out_dir=out_dir)
        if refresh or found[1] is None:
            if not run:
                self.results[name] = None
                return None
            self.log(f"[{name}] starting")
        rec, self.states[name] = execute(st, cfg, paths, hashes, refresh=refresh, out_dir=out_dir,
                                         progress=self.progress, looked_up=found,
                                         overridden={k: str(v) for k, v in overrides.items()}, **self.shard_opts)
        self.log(f"[{name}] {self.states[name]}: {json.dumps(rec['stats'], default=str)}")
        self.results[name] = rec
        return rec


def run_pipeline(cfg: RunConfig, targets: list[str] | tuple[str, ...] | None = None, *,
                 overrides: dict[str, dict[str, str]] | None = None, refresh: bool = False,
                 log_fn: Callable[[str], None] = print, summary_file: str = "run_summary.json",
                 progress: Callable[..., None] | None = None,
                 out_dirs: dict[str, str | os.PathLike] | None = None, sharded: bool = True,
                 shard_map: "shards.Mapper | None" = None) -> dict[str, Any]:
    """Bring `targets` (every stage when None) up to date in this process, with what they need.

    `overrides`: {stage: {input name: path}} feeds a stage from files instead of its upstream (an
    optional input not given then comes only from an up-to-date producer). `refresh`: rerun the
    targets even when up to date. `out_dirs`: {stage: folder} instead of <work_dir>/<stage folder>.
    `sharded`/`shard_map`: how stages that declare shards run them (`execute`)."""
    names = list(targets) if targets else list(all_stages())
    plan(names)  # unknown names: KeyError
    cfg.work_path.mkdir(parents=True, exist_ok=True)
    from grouprank.work_lock import work_dir_lock
    with work_dir_lock(cfg.work_path):  # one writer per work dir
        return _run_locked(cfg, names, overrides, refresh, log_fn, summary_file, progress, out_dirs,
                           {"sharded": sharded, "shard_map": shard_map})


def _run_locked(cfg, names, overrides, refresh, log_fn, summary_file, progress, out_dirs,
                shard_opts) -> dict[str, Any]:
    runner = _Runner(cfg, names, overrides or {}, refresh, out_dirs or {}, log_fn, progress, shard_opts)
    t_all = time.time()
    for name in names:
        runner.ensure(name)
    records = {k: v for k, v in runner.results.items() if v is not None}
    summary = summarise(cfg, records, runner.states)
    summary["wall_s"] = round(time.time() - t_all, 2)
    write_summary(cfg, summary, summary_file)
    return summary


def stage(name: str) -> Stage:
    return all_stages()[name]
