"""The one executor: everything around a stage, for every way of running it.

- `run_stage(stage, cfg, inputs)`: read the declared input tables, call `stage.run`, write the
  declared output tables (the only place stage Parquet files are read or written), check that every
  required output exists, fingerprint the outputs, time the call. Returns a JSON-able record.
- `cache_key(stage, cfg, input_hashes)`: stage name + the config sections it declares (checked: the
  stage runs on a recording copy of the configuration and may read nothing else) + the content
  hashes of its inputs + the files it reads besides them and the result-changing environment
  variables + the source of every project module it can import and the library versions. The Prefect task's cache policy and the in-process
  runner's resume both use it.
- `run_pipeline(cfg, targets)`: the in-process runner, holding the work dir's lock
  (`grouprank.work_lock`: one writer per work dir). A finished stage leaves its record and key in
  `<work_dir>/_stages/<stage>.json`; a rerun whose key and output fingerprints still match reuses it,
  so a crashed or killed run resumes at the first unfinished stage. LLM answers already paid for
  come from the LLM client's own cache when a stage reruns.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from grouprank.config import RunConfig
from grouprank.config_reads import recording, undeclared
from grouprank.file_hash import file_sha256
from grouprank.log_summary import summarised_warnings
from grouprank.model_lock import held
from grouprank.paths import REPO_ROOT
from grouprank.stage import Stage, StageContext, StageResult, TableOut
from grouprank.stage_list import all_stages, plan, wiring_of

log = logging.getLogger("grouprank.executor")

RECORDS = "_stages"  # <work_dir>/_stages/<stage>.json: a finished stage's record and key
ALL_SECTIONS = tuple(n for n in RunConfig.model_fields if n != "work_dir")  # work_dir: in every key


# --------------------------------------------------------------------------- fingerprints
def _file_sha(p: Path) -> str:
    return file_sha256(p)


def fingerprint(path: str | os.PathLike | None) -> str:
    """sha256 of a file's bytes; of a folder's relative names and bytes; "absent" when missing."""
    if path is None:
        return "absent"
    p = Path(path)
    if p.is_file():
        return _file_sha(p)
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(x for x in p.rglob("*") if x.is_file() and not x.name.endswith(".tmp")):
            h.update(str(f.relative_to(p)).encode() + b"\0" + _file_sha(f).encode())
        return "dir:" + h.hexdigest()
    return "absent"


def fingerprints(outputs: dict[str, Any]) -> dict[str, str]:
    return {k: fingerprint(v) for k, v in (outputs or {}).items()}


def stale_outputs(record: dict) -> list[str]:
    """Outputs whose files no longer match what the stage wrote (deleted, overwritten by a run with
    another configuration, ...): such a record cannot be reused."""
    now = fingerprints(record.get("outputs") or {})
    return [k for k, v in (record.get("fingerprints") or {}).items() if now.get(k) != v]


# --------------------------------------------------------------------------- cache keys
# Environment variables that change what a stage computes, and the module that reads each: a stage
# whose code can import that module has the variable's value, and the content hash of the file it
# names, in its key. tests/test_cache_key.py checks that every GROUPRANK_* variable read anywhere is
# here or in NOT_RESULT_ENV.
RESULT_ENV = {"GROUPRANK_LOCAL_CALIBRATION": "grouprank.judges.local_calibration"}
NOT_RESULT_ENV = {
    "GROUPRANK_DATA_ROOT": "where the collections are: the load stage's key hashes the files it reads",
    "GROUPRANK_LOCAL_EMBED_CACHE": "a cache of embeddings keyed by model and text",
    "GROUPRANK_MODELS_DIR": "where model files are kept (named by model)",
    "GROUPRANK_CACHE_DIR": "where ONNX exports are kept (keyed by model and settings)",
    "GROUPRANK_STATE_DIR": "the managed LLM server's pid files",
    "GROUPRANK_PROGRESS_EVERY_S": "how often progress is logged",
    "GROUPRANK_LLM_HTTPX": "the HTTP transport, not the answers (cached by prompt)",
    "GROUPRANK_LLM_EXTRA_BUFTS": "a llama.cpp buffer option (speed)",
    "GROUPRANK_LLM_CONCURRENCY": "the flows' concurrency limit",
    "GROUPRANK_RETRY_BACKOFF_S": "the flows' retry delay",
    "GROUPRANK_LOCK_TIMEOUT_S": "how long a run waits for the work dir's lock",
    "GROUPRANK_TASK_RUNNER": "which Prefect task runner runs the stages (where, not what)",
    "GROUPRANK_DASK_WORKERS": "the Dask task runner's worker count",
    "GROUPRANK_MAX_WORKERS": "the thread task runner's worker count",
}
# libraries whose version can change results: their versions are in every key
RESULT_LIBRARIES = ("numpy", "pyarrow", "torch", "transformers", "sentence-transformers", "bm25s", "faiss-cpu",
                    "trl", "peft", "onnxruntime", "ir-measures", "scipy")
SOURCE_ROOT = REPO_ROOT  # where source_key reads the code (a test points it at an edited copy)


def config_key(stage: Stage, cfg: RunConfig) -> str:
    """Hash of the config sections the stage declares (and the work dir: outputs live there)."""
    payload: dict = {"work_dir": str(cfg.work_path)}
    for s in stage.sections or ALL_SECTIONS:
        name, exclude = (s, ()) if isinstance(s, str) else s
        value = getattr(cfg, name)
        payload[name] = value.model_dump(mode="json", exclude=set(exclude)) if hasattr(value, "model_dump") else value
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def source_modules(stage: Stage) -> tuple[str, ...]:
    """Where the code a stage runs starts: its run function's module, the executor's table I/O
    (data_schemas), the Stage and RunConfig definitions, and the stage's extra `sources`."""
    return (stage.run.__module__, "data_schemas", "grouprank.stage", "grouprank.config",
            *(s.replace("/", ".").removesuffix(".py") for s in stage.sources))


def source_key(stage: Stage) -> str:
    """Hash of every project source file the stage's run can import (the import graph,
    `grouprank.source_graph`), the data files beside them, and the versions of the libraries that
    compute results."""
    return _source_hash(source_modules(stage), str(SOURCE_ROOT))


@lru_cache(maxsize=1)
def _library_versions() -> tuple[tuple[str, str], ...]:
    from importlib.metadata import PackageNotFoundError, version
    out = []
    for name in RESULT_LIBRARIES:
        try:
            out.append((name, version(name)))
        except PackageNotFoundError:
            out.append((name, "absent"))
    return tuple(out)


def _source_hash(starts: tuple[str, ...], root: str) -> str:
    from grouprank.source_graph import source_files
    h = hashlib.sha256()
    for f in source_files(starts, Path(root)):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        h.update(_file_sha(f).encode())
    h.update(json.dumps(_library_versions()).encode())
    return h.hexdigest()[:24]


def external_inputs(stage: Stage, cfg: RunConfig) -> dict[str, str]:
    """{name: content hash} of what a stage reads besides its wired inputs: the files its `reads`
    declares (a collection's files, BRIGHT's excluded ids) and the result-changing environment
    variables its code can read (with the file each names)."""
    out: dict[str, str] = {}
    for name, path in sorted((stage.reads(cfg) if stage.reads else {}).items()):
        out[f"file:{name}"] = f"{path}:{fingerprint(path)}" if path else "none"
    env = {k: m for k, m in RESULT_ENV.items() if os.environ.get(k)}
    if env:
        from grouprank.source_graph import cached_graph, reachable
        mods = reachable(list(source_modules(stage)), cached_graph(Path(SOURCE_ROOT)))
        for k, m in sorted(env.items()):
            if m in mods:
                v = os.environ[k]
                out[f"env:{k}"] = f"{v}:{fingerprint(v)}"
    return out


def cache_key(stage: Stage, cfg: RunConfig, input_hashes: dict[str, str]) -> str:
    payload = {"stage": stage.name, "config": config_key(stage, cfg),
               "inputs": dict(sorted(input_hashes.items())), "source": source_key(stage),
               "external": external_inputs(stage, cfg)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


# --------------------------------------------------------------------------- one stage
def _plain(x: Any) -> Any:
    def default(o: Any) -> Any:
        if hasattr(o, "item"):
            return o.item()
        if isinstance(o, (set, tuple)):
            return list(o)
        return str(o)
    return json.loads(json.dumps(x, default=default))


def read_inputs(stage: Stage, paths: dict[str, str | os.PathLike]) -> dict[str, Any]:
    """Declared inputs: tables read (schema-checked) from their Parquet files, files/folders as Paths."""
    from grouprank.errors import UserError
    out: dict[str, Any] = {}
    for p in stage.inputs:
        path = paths.get(p.name)
        if path is None:
            if not p.optional:
                raise UserError(f"stage {stage.name}: missing input {p.name!r}")
            out[p.name] = None
            continue
        out[p.name] = _read_table(p, Path(path)) if p.kind == "table" else Path(path)
    return out


def _read_table(port, path: Path):
    from data_schemas.base import META_NAME
    if port.lenient:
        import pyarrow.parquet as pq
        if path.is_dir() or (pq.read_schema(path).metadata or {}).get(META_NAME) != port.table.name.encode():
            return pq.read_table(path, page_checksum_verification=True)  # another layout: the stage normalises it
    return port.table.read(path)


def write_outputs(stage: Stage, out_dir: Path, result: StageResult) -> dict[str, str]:
    """Write the declared output tables; check files/folders exist. -> {output name: path}."""
    unknown = set(result.outputs) - {p.name for p in stage.outputs}
    if unknown:
        raise RuntimeError(f"stage {stage.name} returned undeclared outputs {sorted(unknown)}")
    paths: dict[str, str] = {}
    for p in stage.outputs:
        v = result.outputs.get(p.name)
        if v is None:
            if not p.optional:
                raise RuntimeError(f"stage {stage.name} did not produce its output {p.name!r}")
            continue
        if p.kind == "table":
            t, extra = (v.table, v.extra) if isinstance(v, TableOut) else (v, None)
            paths[p.name] = str(p.table.write(t, out_dir / p.file, extra=extra))
        else:
            if not Path(v).exists():
                raise RuntimeError(f"stage {stage.name}: output {p.name!r} not found at {v}")
            paths[p.name] = str(v)
    return paths


def run_stage(stage: Stage, cfg: RunConfig, inputs: dict[str, str | os.PathLike], *,
              progress: Callable[..., None] | None = None, api_keys: dict[str, str] | None = None,
              out_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run one stage on input files -> {"stage", "outputs", "stats", "fingerprints", "wall_s"}."""
    t0 = time.time()
    out = Path(out_dir) if out_dir is not None else cfg.work_path / stage.folder
    out.mkdir(parents=True, exist_ok=True)
    _marker(cfg, stage).unlink(missing_ok=True)  # its outputs are being rewritten
    ctx = StageContext(out_dir=out, work_dir=cfg.work_path, progress=progress, api_keys=api_keys,
                       input_paths={k: str(v) for k, v in inputs.items()})
    data = read_inputs(stage, inputs)
    view, reads = recording(cfg, deep=tuple(s[0] for s in stage.sections if not isinstance(s, str)))
    with held(f"stage {stage.name}") if stage.builds_models else contextlib.nullcontext() as lock, \
            summarised_warnings(f"stage {stage.name}"):
        result = stage.run(data, view, ctx)
    missed = undeclared(reads, stage.sections or ALL_SECTIONS)
    if missed:  # its cache key would not change with them: a stale result could be reused
        raise RuntimeError(f"stage {stage.name} read configuration {missed} that its Stage.sections "
                           f"{list(stage.sections)} does not declare (declare it in {stage.package})")
    paths = write_outputs(stage, out, result)
    stats = _plain(result.stats or {})
    wall = round(time.time() - t0, 2)
    if lock is not None:  # waiting for another stage's model building is not this stage's work
        stats["model_lock_wait_s"] = round(lock.waited_s, 2)
        stats["work_s"] = round(wall - lock.waited_s, 2)
    return {"stage": stage.name, "outputs": paths, "stats": stats, "fingerprints": fingerprints(paths),
            "wall_s": wall}


# --------------------------------------------------------------------------- in-process runner
def _marker(cfg: RunConfig, stage: Stage) -> Path:
    return cfg.work_path / RECORDS / f"{stage.name}.json"


def stored_record(cfg: RunConfig, stage: Stage) -> dict | None:
    try:
        return json.loads(_marker(cfg, stage).read_text())
    except (OSError, ValueError):
        return None


def load_record(cfg: RunConfig, stage: Stage, key: str) -> dict | None:
    """The finished record of `stage` under `key`, if its outputs are still what it wrote."""
    rec = stored_record(cfg, stage)
    if rec is None or rec.get("key") != key or stale_outputs(rec):
        return None
    return rec


def save_record(cfg: RunConfig, stage: Stage, key: str, rec: dict, overridden: dict | None = None) -> None:
    """Keep a finished stage's record; `overridden`: the inputs that were fed from files."""
    p = _marker(cfg, stage)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps({**rec, "key": key, "overridden": overridden or {}}, indent=1, default=str))
    tmp.replace(p)


def stage_inputs(stage: Stage, results: dict[str, dict]) -> tuple[dict[str, str], dict[str, str]]:
    """(input paths, input content hashes) for `stage` from upstream records."""
    paths, hashes = {}, {}
    for name, (src, out) in wiring_of(stage.name).items():
        rec = results.get(src) or {}
        if out in (rec.get("outputs") or {}):
            paths[name] = rec["outputs"][out]
            hashes[name] = rec["fingerprints"].get(out, "?")
    return paths, hashes


class _Runner:
    """Brings targets up to date, make-style: a stage runs unless its stored record has the key its
    inputs and configuration give now and its outputs are unchanged. A stage last fed from files
    (`--<input> PATH`) keeps those inputs when a later command only needs its outputs."""

    def __init__(self, cfg, targets, overrides, refresh, out_dirs, log_fn, progress):
        self.cfg, self.targets, self.overrides = cfg, set(targets), overrides
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
        key = cache_key(st, cfg, hashes)
        out_dir = self.out_dirs.get(name)
        rec = None if (self.refresh and name in self.targets) else load_record(cfg, st, key)
        if rec is not None and out_dir is not None and any(
                not Path(v).resolve().is_relative_to(Path(out_dir).resolve()) for v in rec["outputs"].values()):
            rec = None  # finished, but somewhere else
        if rec is not None:
            self.states[name] = "cached"
        elif not run:
            self.results[name] = None
            return None
        else:
            self.log(f"[{name}] starting")
            rec = run_stage(st, cfg, paths, progress=self.progress, out_dir=out_dir)
            rec["input_hashes"] = hashes
            save_record(cfg, st, key, rec, {k: str(v) for k, v in overrides.items()})
            self.states[name] = "ran"
        self.log(f"[{name}] {self.states[name]}: {json.dumps(rec['stats'], default=str)}")
        self.results[name] = rec
        return rec


def run_pipeline(cfg: RunConfig, targets: list[str] | tuple[str, ...] | None = None, *,
                 overrides: dict[str, dict[str, str]] | None = None, refresh: bool = False,
                 log_fn: Callable[[str], None] = print, summary_file: str = "run_summary.json",
                 progress: Callable[..., None] | None = None,
                 out_dirs: dict[str, str | os.PathLike] | None = None) -> dict[str, Any]:
    """Bring `targets` (every stage when None) up to date in this process, with what they need.

    `overrides`: {stage: {input name: path}} feeds a stage from files instead of its upstream (an
    optional input not given then comes only from an up-to-date producer). `refresh`: rerun the
    targets even when up to date. `out_dirs`: {stage: folder} instead of <work_dir>/<stage folder>."""
    every = all_stages()
    names = list(targets) if targets else list(every)
    plan(names)  # unknown names: KeyError
    cfg.work_path.mkdir(parents=True, exist_ok=True)
    from grouprank.work_lock import work_dir_lock
    with work_dir_lock(cfg.work_path):  # one writer per work dir
        return _run_locked(cfg, names, every, overrides, refresh, log_fn, summary_file, progress, out_dirs)


def _run_locked(cfg, names, every, overrides, refresh, log_fn, summary_file, progress, out_dirs) -> dict[str, Any]:
    runner = _Runner(cfg, names, overrides or {}, refresh, out_dirs or {}, log_fn, progress)
    t_all = time.time()
    for name in names:
        runner.ensure(name)
    summary: dict[str, Any] = {"run": cfg.name, "collection": cfg.data.collection,
                               "work_dir": str(cfg.work_path), "stages": {}}
    for name in every:  # pipeline order
        rec = runner.results.get(name)
        if rec is not None:
            summary["stages"][name] = {"state": runner.states[name], "wall_s": rec.get("wall_s"),
                                       "outputs": rec["outputs"], "stats": rec["stats"]}
    summary["wall_s"] = round(time.time() - t_all, 2)
    if "export" in summary["stages"]:
        summary["exports"] = summary["stages"]["export"]["outputs"].get("export")
    path = cfg.work_path / summary_file
    path.write_text(json.dumps(summary, indent=2, default=str))
    summary["summary_path"] = str(path)
    return summary


def stage(name: str) -> Stage:
    return all_stages()[name]
