"""A stage's cache key and its outputs' fingerprints: what decides whether a finished stage can be
reused (`grouprank.executor`, the one runner core, is the only caller that decides).

- `fingerprint(path)`: the content hash of an output file or folder; `stale_outputs(record)`: the
  outputs whose files changed since the stage wrote them (such a record is never reused).
- `cache_key(stage, cfg, input_hashes)`: stage name + the config sections it declares (checked: the
  stage runs on a recording copy of the configuration and may read nothing else) + the content
  hashes of its inputs + the files it reads besides them and the result-changing environment
  variables + the source of every project module it can import and the library versions.
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from grouprank.config import RunConfig
from grouprank.file_hash import file_sha256
from grouprank.paths import REPO_ROOT
from grouprank.stage import Stage

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
RESULT_ENV: dict[str, str] = {}  # none today: what changes results is configuration (e.g. a local
# judge's calibration file is `judges.judges[].local_calibration`, read by the judge stage)
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
    "GROUPRANK_RAY_CPUS": "the local Ray task runner's worker slots",
    "GROUPRANK_RAY_OBJECT_STORE_MB": "the local Ray's object store size",
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
