"""Whole-pipeline determinism: two runs of a small Cranfield configuration (offline local judge, no
LLM) in fresh work dirs with one seed write byte-identical exports and stage tables. The first run
goes through every stage, so each stage's configuration reads are also checked against its
declaration there (the executor refuses undeclared reads). Training outputs are not compared:
ARCHITECTURE.md ("Determinism") says why torch on CPU is not bit-reproducible."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from grouprank import executor
from grouprank.config import RunConfig

DETERMINISTIC = ("collection", "mine_queries", "retrieve", "judge", "fuse", "build_datasets", "export")


def _hashes(work: Path) -> dict[str, str]:
    """sha256 of every export file and of every stage table (Parquet). The stages' JSON reports are
    left out: they hold timings and the work dir's own path (retrieve/indexes.json names the store)."""
    out = {}
    for d in DETERMINISTIC:
        for f in sorted((work / d).rglob("*")):
            if f.is_file() and (d == "export" or f.suffix == ".parquet"):
                out[str(f.relative_to(work))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.mark.timeout(600)
def test_two_runs_with_one_seed_write_identical_bytes(tmp_path):
    from tests.support.prefect_local import small_config
    runs = []
    for i, targets in enumerate((None, ["export"])):
        cfg = RunConfig.model_validate(small_config(tmp_path / f"w{i}", None, name="det"))
        s = executor.run_pipeline(cfg, targets, log_fn=lambda m: None)
        assert {v["state"] for v in s["stages"].values()} == {"ran"}
        runs.append(_hashes(tmp_path / f"w{i}"))
    a, b = runs
    assert any(k.startswith("export/") and k.endswith(".parquet") for k in a)
    assert any(k.startswith("judge/") for k in a)
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []
    # and another seed really gives other bytes (the comparison can fail)
    cfg = RunConfig.model_validate({**small_config(tmp_path / "w2", None, name="det"), "seed": 14})
    executor.run_pipeline(cfg, ["export"], log_fn=lambda m: None)
    c = _hashes(tmp_path / "w2")
    assert [k for k in a if k.startswith("export/") and a[k] != c.get(k)]
