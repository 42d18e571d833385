"""The pipeline's stages in order, callable without an orchestrator.

`flows/` wraps the same stage functions with Prefect caching, retries and artifacts; this module
is the in-process runner (`grouprank run --no-prefect`) and the single place that says which
stage consumes which outputs.
"""
from __future__ import annotations

import importlib
import json
import time
from pathlib import Path
from typing import Any, Callable

from grouprank.config import RunConfig


def stage_load(cfg: RunConfig) -> dict[str, Any]:
    from grouprank.collections import load_from_config
    from grouprank.collections.export import export_collection
    c = load_from_config(cfg)
    paths = export_collection(c, cfg.work_path / "collection")
    stats = {k: v for k, v in c.stats().items() if k not in ("splits", "grades")}
    return {"outputs": {k: str(v) for k, v in paths.items()}, "stats": stats}


# (stage name, "module:function", {input name: (producing stage, output name)})
STAGES: list[tuple[str, str, dict[str, tuple[str, str]]]] = [
    ("load", "grouprank.pipeline:stage_load", {}),
    ("mine_queries", "grouprank.queries.stage:run",
     {"documents": ("load", "documents"), "queries": ("load", "queries"), "qrels": ("load", "qrels")}),
    ("retrieve", "grouprank.first_stage.stage:run",
     {"documents": ("load", "documents"), "queries": ("mine_queries", "mined_queries")}),
    ("judge", "grouprank.judges.stage:run",
     {"documents": ("load", "documents"), "queries": ("mine_queries", "mined_queries"),
      "candidates": ("retrieve", "candidates")}),
    ("fuse", "grouprank.judges.stage:run_fuse", {"judgments": ("judge", "judgments")}),
    ("build_datasets", "grouprank.trainsets.stage:run",
     {"documents": ("load", "documents"), "queries": ("mine_queries", "mined_queries"),
      "candidates": ("retrieve", "candidates"), "labels": ("fuse", "labels"),
      "judgments": ("judge", "judgments")}),
    ("export", "grouprank.trainsets.stage:run_export",
     {"documents": ("load", "documents"), "queries": ("mine_queries", "mined_queries"),
      "labels": ("fuse", "labels"), "reranker_rl": ("build_datasets", "reranker_rl"),
      "reranker_sft": ("build_datasets", "reranker_sft"),
      "retriever_examples": ("build_datasets", "retriever_examples"),
      "judgments": ("judge", "judgments")}),
    ("train_retriever", "grouprank.retriever_training.stage:run",
     {"retriever_examples": ("build_datasets", "retriever_examples"), "documents": ("load", "documents"),
      "queries": ("load", "queries"), "qrels": ("load", "qrels"), "labels": ("fuse", "labels")}),
    ("train_reranker", "grouprank.reranker.stage:run",
     {"reranker_sft": ("build_datasets", "reranker_sft"), "reranker_rl": ("build_datasets", "reranker_rl")}),
    ("evaluate", "grouprank.evaluation.stage:run",
     {"documents": ("load", "documents"), "queries": ("load", "queries"), "qrels": ("load", "qrels"),
      "mined_queries": ("mine_queries", "mined_queries"), "retriever_model": ("train_retriever", "model"),
      "reranker_model": ("train_reranker", "model")}),
]


def resolve(target: str) -> Callable[..., dict]:
    mod, fn = target.split(":")
    return getattr(importlib.import_module(mod), fn)


def run_pipeline(cfg: RunConfig, *, stages: list[str] | None = None,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    out = cfg.work_path
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    summary: dict[str, Any] = {"run": cfg.name, "work_dir": str(out), "stages": {}}
    t_all = time.time()
    for name, target, wiring in STAGES:
        if stages and name not in stages:
            continue
        inputs = {k: Path(results[s]["outputs"][o]) for k, (s, o) in wiring.items()
                  if s in results and o in results[s]["outputs"]}
        t0 = time.time()
        res = resolve(target)(cfg, **inputs)
        res.setdefault("stats", {})["wall_s"] = round(time.time() - t0, 2)
        results[name] = res
        summary["stages"][name] = res
        log(f"[{name}] {json.dumps(res['stats'], default=str)}")
    summary["wall_s"] = round(time.time() - t_all, 2)
    path = out / "run_summary.json"
    path.write_text(json.dumps(summary, indent=2, default=str))
    summary["summary_path"] = str(path)
    return summary
