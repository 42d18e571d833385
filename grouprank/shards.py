"""Shard plans: a stage that can split its work declares it, and every runner maps the same plan.

    STAGE = Stage(..., sharding=Sharding(plan=plan_fn, run_shard=shard_fn))   # grouprank.stage.Sharding

    plan_fn(cfg, inputs) -> [params, ...]          JSON-serialisable, one per shard, [] = nothing to split
    shard_fn(params, cfg, inputs) -> stats         does one shard's work, storing its result durably

The merge is the stage's own `run`: it consumes what the shards stored (the retrieve stage's
embeddings memmap, filled shard by shard) in a fixed order, so the output is the unsharded run's,
byte for byte. datatrove's shape: each shard is a rank with its own completion record.

- `plan(stage, cfg, inputs, key)`: the stage's shards under a cache key, each a `ShardSpec`, and
  which of them are still pending (no completion record).
- `run_shard(stage, cfg, inputs, spec)`: one shard, anywhere (in process, a local pool's worker, a
  Dask or Ray worker through the Prefect flow): runs it unless its completion record exists, then
  writes the record `<work_dir>/_stages/<stage>.shards/<key>/<index>.json` (worker, time, stats).
  A killed run redoes only the shards without a record.
- `sequential` is the default mapper (in process, in order); `grouprank.shard_pool.process_pool`
  maps over local worker processes; the Prefect flow maps shards as tasks on its task runner.

Models a shard needs are per-process shared (e.g. `first_stage.dense.get_encoder`), so a worker
loads them once, not once per shard.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from grouprank.atomic import write_json_atomic
from grouprank.records import RECORDS


@dataclass(frozen=True)
class ShardSpec:
    """One shard of one stage run: its position, the plan's parameters and the run's cache key."""
    stage: str
    index: int
    of: int
    key: str
    params: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.stage}[{self.index + 1}/{self.of}]"

    def as_dict(self) -> dict:
        return {"stage": self.stage, "index": self.index, "of": self.of, "key": self.key, "params": self.params}

    @classmethod
    def from_dict(cls, d: dict) -> "ShardSpec":
        return cls(d["stage"], int(d["index"]), int(d["of"]), d["key"], dict(d.get("params") or {}))


class ShardError(RuntimeError):
    """A shard failed: the message names the shard and the worker."""


def shard_dir(work_path: Path, stage_name: str, key: str) -> Path:
    return Path(work_path) / RECORDS / f"{stage_name}.shards" / key


def record_path(work_path: Path, spec: ShardSpec) -> Path:
    return shard_dir(work_path, spec.stage, spec.key) / f"{spec.index:05d}.json"


def shard_record(work_path: Path, spec: ShardSpec) -> dict | None:
    """The shard's completion record, if it finished under this plan (same parameters)."""
    try:
        rec = json.loads(record_path(work_path, spec).read_text())
    except (OSError, ValueError):
        return None
    return rec if rec.get("params") == spec.params and rec.get("of") == spec.of else None


def plan(stage, cfg, inputs: dict, key: str) -> tuple[list[ShardSpec], list[ShardSpec]]:
    """(every shard, the pending ones) of `stage` for these read inputs under cache key `key`.
    Completion records of other keys (an earlier configuration or input) are dropped."""
    if stage.sharding is None:
        return [], []
    params = stage.sharding.plan(cfg, inputs)
    specs = [ShardSpec(stage.name, i, len(params), key, dict(p)) for i, p in enumerate(params)]
    root = shard_dir(cfg.work_path, stage.name, key).parent
    if root.exists():
        for old in root.iterdir():
            if old.name != key:
                shutil.rmtree(old, ignore_errors=True)
    return specs, [s for s in specs if shard_record(cfg.work_path, s) is None]


def where() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


def run_shard(stage, cfg, inputs: dict, spec: ShardSpec) -> dict:
    """Run one shard unless its completion record exists; returns the record."""
    done = shard_record(cfg.work_path, spec)
    if done is not None:
        return {**done, "state": "cached"}
    t0 = time.time()
    try:
        stats = stage.sharding.run_shard(spec.params, cfg, inputs)
    except Exception as e:
        raise ShardError(f"shard {spec.label} failed on {where()}: {type(e).__name__}: {e}") from e
    rec = {**spec.as_dict(), "worker": where(), "started": t0, "finished": time.time(),
           "wall_s": round(time.time() - t0, 3), "stats": stats or {}}
    write_json_atomic(record_path(cfg.work_path, spec), rec, indent=1)  # the completion record: written last
    return {**rec, "state": "ran"}


# this process's last read inputs: a worker running many shards of one stage reads (and schema-checks)
# the stage's tables once, not once per shard (whole-table work per shard is O(N) each, O(N^2/shard) in all)
_INPUTS: dict[tuple, dict] = {}
_INPUTS_LOCK = threading.Lock()


def _files_identity(paths: dict) -> tuple:
    out = []
    for name, path in sorted(paths.items()):
        try:
            st = os.stat(path)
            out.append((name, str(path), st.st_ino, st.st_mtime_ns, st.st_size))  # outputs are replaced: new inode
        except OSError:
            out.append((name, str(path), None, None, None))
    return tuple(out)


def read_inputs_once(stage, input_paths: dict) -> dict:
    """The stage's inputs, read once per process for the same files (same paths, sizes and mtimes)."""
    from grouprank.stage_run import read_inputs
    key = (stage.name, _files_identity(input_paths))
    with _INPUTS_LOCK:
        hit = _INPUTS.get(key)
        if hit is None:
            _INPUTS.clear()  # one stage's inputs at a time
            hit = _INPUTS[key] = read_inputs(stage, input_paths)
        return hit


def run_shard_paths(stage_name: str, cfg, input_paths: dict[str, str], spec: dict | ShardSpec) -> dict:
    """`run_shard` from input file paths (what a remote worker receives): reads the declared inputs
    (once per worker process for all the shards of one stage run)."""
    from grouprank.stage_list import all_stages
    stage = all_stages()[stage_name]
    spec = spec if isinstance(spec, ShardSpec) else ShardSpec.from_dict(spec)
    if shard_record(cfg.work_path, spec) is not None:  # done: no need to read the inputs
        return run_shard(stage, cfg, {}, spec)
    return run_shard(stage, cfg, read_inputs_once(stage, input_paths), spec)


# mapper(stage name, cfg, input paths, pending shards) -> their records, in any order
Mapper = Callable[[str, Any, dict, Sequence[ShardSpec]], list[dict]]


def sequential(stage_name: str, cfg, input_paths: dict, specs: Sequence[ShardSpec], *,
               data: dict | None = None) -> list[dict]:
    """The default mapper: every shard in this process, in order (`data`: the inputs, already read)."""
    if not specs:
        return []
    from grouprank.stage_list import all_stages
    from grouprank.stage_run import read_inputs
    stage = all_stages()[stage_name]
    data = data if data is not None else read_inputs(stage, input_paths)
    return [run_shard(stage, cfg, data, s) for s in specs]


def run_all(stage, cfg, input_paths: dict, key: str, mapper: Mapper | None = None, *,
            data: dict | None = None) -> dict | None:
    """Plan `stage`'s shards and run the pending ones with `mapper` (default: `sequential`); every
    shard is complete when it returns. `data`: the inputs already read from `input_paths`.
    -> the shard summary for the stage's record, None when the stage has nothing to split."""
    from grouprank.stage_run import read_inputs
    data = read_inputs(stage, input_paths) if data is None else data
    specs, pending = plan(stage, cfg, data, key)
    if not specs:
        return None
    done = [{**shard_record(cfg.work_path, s), "state": "cached"} for s in specs if s not in pending]
    ran = sequential(stage.name, cfg, input_paths, pending, data=data) if mapper is None \
        else mapper(stage.name, cfg, input_paths, pending)
    missing = [s.label for s in specs if shard_record(cfg.work_path, s) is None]
    if missing:
        raise ShardError(f"stage {stage.name}: shard(s) {missing[:5]} did not finish")
    return summary(done + list(ran))


def summary(records: Sequence[dict]) -> dict:
    """Per-run shard facts for the stage's record: how many ran, were reused, on which workers."""
    workers = sorted({r.get("worker", "?") for r in records})
    return {"shards": len(records), "shards_ran": sum(r.get("state") == "ran" for r in records),
            "shard_workers": workers}
