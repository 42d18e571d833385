"""The one record store: `<work_dir>/_stages/<stage>.json` holds a finished stage's record (output
paths, stats, LLM calls, output fingerprints, input hashes) and the cache key it was made under.

Every runner reads and writes here through `grouprank.executor` (the in-process runner behind
`grouprank run`, the Prefect flows' tasks, the benches), so a stage finished by one is reused by the
others. A record is reused only while its key matches and its outputs are still what it wrote.
"""
from __future__ import annotations

import json
from pathlib import Path

from grouprank.stage import Stage
from grouprank.cache_keys import stale_outputs

RECORDS = "_stages"


def record_path(work_path: Path, stage: Stage) -> Path:
    return work_path / RECORDS / f"{stage.name}.json"


def stored_record(cfg, stage: Stage) -> dict | None:
    """The stage's last record, whatever its key (None when there is none or it is unreadable)."""
    try:
        return json.loads(record_path(cfg.work_path, stage).read_text())
    except (OSError, ValueError):
        return None


def load_record(cfg, stage: Stage, key: str) -> dict | None:
    """The finished record of `stage` under `key`, if its outputs are still what it wrote."""
    rec = stored_record(cfg, stage)
    if rec is None or rec.get("key") != key or stale_outputs(rec):
        return None
    return rec


def save_record(cfg, stage: Stage, key: str, rec: dict, overridden: dict | None = None) -> None:
    """Keep a finished stage's record (atomically); `overridden`: the inputs that were fed from files."""
    p = record_path(cfg.work_path, stage)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps({**rec, "key": key, "overridden": overridden or {}}, indent=1, default=str))
    tmp.replace(p)


def forget(cfg, stage: Stage) -> None:
    """Drop the stage's record: its outputs are being rewritten."""
    record_path(cfg.work_path, stage).unlink(missing_ok=True)
