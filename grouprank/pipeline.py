"""The pipeline's stages in order, callable without an orchestrator. Prefect flows in
`flows/` wrap the same stage functions with caching, retries and artifacts."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from grouprank.config import RunConfig


def stage_load(cfg: RunConfig) -> dict[str, Any]:
    from grouprank.collections import load_from_config
    from grouprank.collections.export import export_collection
    c = load_from_config(cfg)
    paths = export_collection(c, cfg.work_path / "collection")
    return {"stats": {k: v for k, v in c.stats().items() if k != "splits"}, "paths": {k: str(v) for k, v in paths.items()}}


def run_pipeline(cfg: RunConfig) -> dict[str, Any]:
    out = cfg.work_path
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"run": cfg.name, "work_dir": str(out), "stages": {}}
    t0 = time.time()
    summary["stages"]["load"] = stage_load(cfg)
    summary["wall_s"] = round(time.time() - t0, 2)
    (out / "run_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    summary["summary_path"] = str(out / "run_summary.json")
    return summary
