"""Running one stage: read its declared input tables, call `stage.run` with a `StageContext`, write
its declared output tables (the only place stage Parquet files are read or written), check that
every required output exists, fingerprint the outputs, time the call, count the LLM calls of the
clients it made. `grouprank.executor` (the runner core) is the caller that decides whether a stage
runs at all.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from grouprank.config import RunConfig
from grouprank.config_reads import recording, undeclared
from grouprank.log_summary import summarised_warnings
from grouprank.model_lock import held
from grouprank.records import forget
from grouprank.services import build
from grouprank.stage import Stage, StageContext, StageResult, TableOut
from grouprank.cache_keys import ALL_SECTIONS, fingerprints

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
              out_dir: str | os.PathLike | None = None, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one stage on input files -> {"stage", "outputs", "stats", "llm", "fingerprints", "wall_s"}.
    `data`: the inputs already read from these files (`read_inputs`), not read again."""
    from grouprank.llm.usage import calls_of, collecting
    t0 = time.time()
    out = Path(out_dir) if out_dir is not None else cfg.work_path / stage.folder
    out.mkdir(parents=True, exist_ok=True)
    forget(cfg, stage)  # its outputs are being rewritten
    data = read_inputs(stage, inputs) if data is None else data
    view, reads = recording(cfg, deep=tuple(s[0] for s in stage.sections if not isinstance(s, str)))
    ctx = StageContext(out_dir=out, work_dir=cfg.work_path, progress=progress, api_keys=api_keys,
                       input_paths={k: str(v) for k, v in inputs.items()}, cfg=view, services=build)
    with held(f"stage {stage.name}") if stage.builds_models else contextlib.nullcontext() as lock, \
            summarised_warnings(f"stage {stage.name}"), collecting() as clients:
        try:
            result = stage.run(data, view, ctx)
            llm = calls_of(clients)
        finally:
            ctx.close()
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
    return {"stage": stage.name, "outputs": paths, "stats": stats, "llm": llm,
            "fingerprints": fingerprints(paths), "wall_s": wall}
