"""Which stages exist, how they are wired, and how Prefect should treat each one.

The wiring (stage order, "module:function" target, which output of which stage feeds which input)
comes from the library: `grouprank.pipeline.STAGES` is the single place that says it. This module
only adds orchestration metadata per stage name: the config sections in its cache key, whether it
calls an LLM (global concurrency limit `llm`), timeout and retries. A stage the library lists but
this table does not know gets safe defaults (every config section in its key).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

from grouprank.config import REPO_ROOT, RunConfig

HOUR = 3600.0

# Fields of `judges` that only the label fusion reads: changing them reruns `fuse` (and what
# follows) but not the judges themselves. Every other field of `judges` (present or future) is in
# the judge stage's key.
FUSION_FIELDS = ("fusion", "beta", "grade_scale", "grade_thresholds", "rank_only_fractions")


def _any_llm_judge(cfg: RunConfig) -> bool:
    return (not cfg.judges.dry_run) and any(j.kind != "local" for j in cfg.judges.judges)


def _llm_reranker(cfg: RunConfig) -> bool:
    return cfg.reranker.backend == "llm" and bool(cfg.llm.endpoints)


@dataclass(frozen=True)
class StageOptions:
    # config sections in the cache key: "section" or ("section", (excluded fields...))
    sections: tuple = ()
    uses_llm: Callable[[RunConfig], bool] | None = None
    timeout_s: float = 6 * HOUR
    retries: int = 2
    # source folders/files (relative to the repo root) whose text is part of the cache key;
    # default: the package of the stage's module
    sources: tuple[str, ...] = ()
    # flow-level label for humans
    title: str = ""


ORCHESTRATION: dict[str, StageOptions] = {
    "load": StageOptions(sections=("data",), timeout_s=2 * HOUR,
                         sources=("grouprank/collections",), title="load collection"),
    # query mining's round-trip filter uses the hybrid retriever: `retrieval` is in its key
    "mine_queries": StageOptions(sections=("data", "queries", "retrieval", "llm"),
                                 uses_llm=lambda c: bool(c.queries.generate), timeout_s=12 * HOUR,
                                 retries=3, title="mine queries"),
    "retrieve": StageOptions(sections=("data", "retrieval"), timeout_s=24 * HOUR,
                             title="retrieve candidates"),
    # the local judge reads retrieval's BM25 parameters and encoder backend
    "judge": StageOptions(sections=("data", ("judges", FUSION_FIELDS), "llm", "retrieval"), uses_llm=_any_llm_judge,
                          timeout_s=48 * HOUR, retries=3, title="LLM judges"),
    "fuse": StageOptions(sections=("data", "judges"), timeout_s=2 * HOUR, title="fuse labels"),
    "build_datasets": StageOptions(sections=("data", "datasets"), timeout_s=6 * HOUR,
                                   title="build datasets"),
    "export": StageOptions(sections=("data", "datasets"), timeout_s=6 * HOUR, title="export"),
    "train_retriever": StageOptions(sections=("data", "retriever", "retrieval"), timeout_s=72 * HOUR,
                                    retries=1, title="train retriever"),
    "train_reranker": StageOptions(sections=("data", "reranker"), timeout_s=72 * HOUR, retries=1,
                                   title="train reranker"),
    "evaluate": StageOptions(sections=("data", "retrieval", "reranker", "llm", "evaluation"),
                             uses_llm=_llm_reranker, timeout_s=24 * HOUR, retries=2, title="evaluate"),
}

ALL_SECTIONS = tuple(n for n in RunConfig.model_fields if n not in ("name",))


@dataclass(frozen=True)
class Stage:
    name: str
    target: str                                   # "module:function"
    wiring: dict = field(default_factory=dict)    # input name -> (producing stage, output name)
    options: StageOptions = StageOptions()

    @property
    def module(self) -> str:
        return self.target.split(":")[0]

    @property
    def function(self) -> str:
        return self.target.split(":")[1]

    @property
    def upstream(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s for s, _ in self.wiring.values()))

    def available(self) -> bool:
        """The stage's module exists in this checkout (stages are added one by one)."""
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:
            return False

    def uses_llm(self, cfg: RunConfig) -> bool:
        return bool(self.options.uses_llm and self.options.uses_llm(cfg))

    def config_key(self, cfg: RunConfig) -> str:
        """Hash of the config sections this stage reads (with the work dir: outputs live there)."""
        sections = self.options.sections or ALL_SECTIONS
        payload: dict = {"work_dir": str(cfg.work_path)}
        for s in sections:
            name, exclude = (s, ()) if isinstance(s, str) else s
            payload[name] = getattr(cfg, name).model_dump(mode="json", exclude=set(exclude))
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]

    def source_key(self) -> str:
        """Hash of the library source the stage runs (its package, or `options.sources`)."""
        if self.options.sources:
            paths = tuple(str(REPO_ROOT / p) for p in self.options.sources)
        else:
            spec = importlib.util.find_spec(self.module)
            origin = Path(spec.origin) if spec and spec.origin else None
            paths = (str(origin.parent),) if origin else ()
        return _source_hash(paths + (str(REPO_ROOT / self.module.replace(".", "/")) + ".py",))


@lru_cache(maxsize=64)
def _source_hash(paths: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for p in sorted(set(paths)):
        root = Path(p)
        files = [root] if root.is_file() else sorted(
            f for f in root.rglob("*") if f.is_file() and "__pycache__" not in f.parts
            and f.suffix not in (".pyc", ".pyo")) if root.is_dir() else []
        for f in files:
            h.update(str(f.relative_to(REPO_ROOT) if f.is_relative_to(REPO_ROOT) else f).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:24]


def stages() -> dict[str, Stage]:
    """All stages the library declares, in pipeline order."""
    from grouprank.pipeline import STAGES
    out: dict[str, Stage] = {}
    for name, target, wiring in STAGES:
        out[name] = Stage(name, target, dict(wiring), ORCHESTRATION.get(name, StageOptions(title=name)))
    return out


def plan(targets: tuple[str, ...] | list[str] | None) -> list[Stage]:
    """The stages needed for `targets` (all stages when None), in pipeline order."""
    every = stages()
    if not targets:
        return list(every.values())
    unknown = [t for t in targets if t not in every]
    if unknown:
        raise KeyError(f"unknown stage(s) {unknown}; the library declares {list(every)}")
    need: set[str] = set()
    todo = list(targets)
    while todo:
        s = todo.pop()
        if s in need:
            continue
        need.add(s)
        todo.extend(every[s].upstream)
    return [st for n, st in every.items() if n in need]


def levels(stage_list: list[Stage]) -> list[list[Stage]]:
    """Group stages into waves: each wave depends only on earlier waves (siblings run in parallel)."""
    names = {s.name for s in stage_list}
    depth: dict[str, int] = {}
    for s in stage_list:  # pipeline order is topological
        ups = [u for u in s.upstream if u in names]
        depth[s.name] = 1 + max((depth[u] for u in ups), default=-1)
    out: list[list[Stage]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
    for s in stage_list:
        out[depth[s.name]].append(s)
    return out
