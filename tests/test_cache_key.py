"""A stage's cache key cannot miss what the stage depends on: the code of every project module it
can import, the configuration it reads (recorded while it runs, checked against its declaration),
the environment variables and files that change its results."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grouprank import cache_keys, executor
from grouprank.config import RunConfig
from grouprank.stage import Stage, StageResult
from grouprank.stage_list import all_stages

REPO = Path(__file__).resolve().parents[1]
UPSTREAM_OF_JUDGE = ("load", "mine_queries", "retrieve")


def _copy_sources(dst: Path) -> Path:
    for pkg in ("grouprank", "data_schemas"):
        shutil.copytree(REPO / pkg, dst / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def _source_keys() -> dict[str, str]:
    return {n: executor.source_key(s) for n, s in all_stages().items()}


# ------------------------------------------------------------------------------------------ code
def test_a_prompt_edit_changes_the_keys_of_the_stages_that_use_it(tmp_path, monkeypatch):
    """The code part of the key follows the import graph: the judge stage's package does not hold
    the pointwise prompt (grouprank/prompts/), yet editing it changes the judge key."""
    root = _copy_sources(tmp_path / "src")
    monkeypatch.setattr(cache_keys, "SOURCE_ROOT", root)
    base = _source_keys()
    assert base == _source_keys()  # stable
    _edit(root / "grouprank/prompts/pointwise.py", 'SYSTEM_PROMPT = (\n', 'SYSTEM_PROMPT = (\n    "Be strict. "\n')
    after_pw = _source_keys()
    changed = {n for n in base if base[n] != after_pw[n]}
    assert "judge" in changed  # the later stages follow through their inputs (the judgments change)
    assert not changed & set(UPSTREAM_OF_JUDGE), changed
    _edit(root / "grouprank/prompts/groupwise.py", 'SYSTEM_PROMPT = (\n', 'SYSTEM_PROMPT = (\n    "Be strict. "\n')
    after_gw = _source_keys()
    changed = {n for n in base if after_pw[n] != after_gw[n]}
    assert {"build_datasets", "export", "judge", "train_reranker"} <= changed, changed
    assert not changed & set(UPSTREAM_OF_JUDGE), changed
    # a data file beside a module (a reranker preset) is code too
    preset = root / "grouprank/reranker/presets/tiny-cpu.yaml"
    preset.write_text(preset.read_text() + "\n# edited\n")
    assert executor.source_key(all_stages()["train_reranker"]) != after_gw["train_reranker"]


def test_import_graph_follows_lazy_imports_and_parent_packages():
    from grouprank.source_graph import import_graph, reachable
    g, _ = import_graph()
    # grouprank.llm's __getattr__ imports its modules by name at run time
    assert "grouprank.llm.client" in reachable(["grouprank.llm"], g)
    # importing grouprank.judges.stage runs grouprank/judges/__init__.py: its file is in the key
    from grouprank.source_graph import source_files
    assert REPO / "grouprank/judges/__init__.py" in source_files(["grouprank.judges.stage"])
    assert "grouprank.prompts.pointwise" in reachable(["grouprank.judges.stage"], g)
    assert "grouprank.judges.stage" not in reachable(["grouprank.collections.stage"], g)


# ------------------------------------------------------------------------------------------ configuration
def _toy(sections, read):
    def run(inputs, cfg, ctx):
        read(cfg)
        return StageResult({}, {})
    return Stage("toy", run, sections=sections)


def test_a_stage_that_reads_undeclared_configuration_is_refused(tmp_path):
    cfg = RunConfig(work_dir=str(tmp_path))
    ok = _toy(("data", "seed"), lambda c: (c.data.collection, c.seed, c.work_path))
    assert executor.run_stage(ok, cfg, {})["stage"] == "toy"
    with pytest.raises(RuntimeError, match=r"read configuration \['judges'\]"):
        executor.run_stage(_toy(("data",), lambda c: c.judges.grade_scale), cfg, {})
    # a field excluded from a declared section is refused too, also through a deep copy
    excl = (("judges", ("beta",)),)
    assert executor.run_stage(_toy(excl, lambda c: c.judges.grade_scale), cfg, {})
    with pytest.raises(RuntimeError, match=r"judges\.beta"):
        executor.run_stage(_toy(excl, lambda c: c.model_copy(deep=True).judges.beta), cfg, {})
    with pytest.raises(RuntimeError, match=r"'rerank'"):
        executor.run_stage(_toy(("data",), lambda c: c.model_copy(deep=True).rerank.top), cfg, {})
    # the recording copy still is a RunConfig, and pickles (to another process) as a plain one
    import pickle
    from grouprank.config_reads import recording
    view, reads = recording(cfg, deep=("judges",))
    back = pickle.loads(pickle.dumps(view))
    assert type(back) is RunConfig and back == cfg and isinstance(view, RunConfig)


def test_the_drifted_declarations_are_in_the_keys(tmp_path):
    """What the stages read on 8a543dc without declaring it (found by the recording view)."""
    every = all_stages()
    base = RunConfig(work_dir=str(tmp_path))

    def changed(stage: str, path: str, value) -> bool:
        other = base.model_copy(deep=True)
        section, field = path.split(".")
        setattr(getattr(other, section), field, value)
        return executor.config_key(every[stage], other) != executor.config_key(every[stage], base)

    assert changed("train_retriever", "evaluation.split", "train")
    assert changed("train_retriever", "datasets.negatives_per_example", 5)
    assert changed("build_datasets", "judges.grade_scale", 4)
    assert not changed("build_datasets", "judges.beta", 0.3)  # fusion-only: comes through the labels
    assert changed("export", "reranker.grpo_steps", 9)          # the card shows the whole configuration
    renamed = base.model_copy(update={"name": "other"})
    assert executor.config_key(every["export"], renamed) != executor.config_key(every["export"], base)


# ------------------------------------------------------------------------------------------ env and files
def test_result_changing_files_are_in_the_key(tmp_path, monkeypatch):
    every = all_stages()
    cfg = RunConfig(work_dir=str(tmp_path / "w"))
    keys = {n: executor.cache_key(s, cfg, {}) for n, s in every.items()}
    # a local judge's calibration file: named in the configuration, its content in the judge's key
    from grouprank.judges.local_calibration import FEATURES_BASE, default_calibration
    cal = tmp_path / "cal.json"
    cal.write_text(default_calibration(FEATURES_BASE).to_json())
    ccfg = RunConfig.load(None, {"work_dir": str(tmp_path / "w"),
                                 "judges.judges": [{"id": "local", "kind": "local", "local_calibration": str(cal)}]})
    k1 = {n: executor.cache_key(s, ccfg, {}) for n, s in every.items()}
    assert k1["judge"] != keys["judge"]
    assert k1["load"] == keys["load"] and k1["retrieve"] == keys["retrieve"]
    c = json.loads(cal.read_text())
    c["thresholds"][0] += 0.1
    cal.write_text(json.dumps(c))  # same path, other content: another key
    assert executor.cache_key(every["judge"], ccfg, {}) != k1["judge"]

    # BRIGHT: the excluded ids are read from examples.jsonl by retrieve and evaluate
    bright = tmp_path / "bright"
    bright.mkdir()
    (bright / "documents.jsonl").write_text('{"id": "d1", "content": "a b"}\n{"id": "d2", "content": "c d"}\n')
    ex = bright / "examples.jsonl"
    ex.write_text('{"id": "q1", "query": "a", "gold_ids": ["d1"], "excluded_ids": []}\n')
    bcfg = RunConfig.load(None, {"work_dir": str(tmp_path / "w"), "data.format": "bright", "data.path": str(bright)})
    before = {n: executor.cache_key(every[n], bcfg, {}) for n in ("load", "retrieve", "evaluate", "judge")}
    ex.write_text('{"id": "q1", "query": "a", "gold_ids": ["d1"], "excluded_ids": ["d2"]}\n')
    after = {n: executor.cache_key(every[n], bcfg, {}) for n in before}
    assert after["retrieve"] != before["retrieve"] and after["evaluate"] != before["evaluate"]
    assert after["load"] != before["load"]  # the collection's files are load's input
    assert after["judge"] == before["judge"]


def test_every_grouprank_environment_variable_is_classified():
    """A GROUPRANK_* variable read anywhere either changes results (in the key) or is listed, with a
    reason, as one that does not."""
    read = set()
    pat = re.compile(r"""(?:environ(?:\.get)?\(|environ\[|getenv\()\s*["'](GROUPRANK_[A-Z0-9_]+)""")
    for d in ("grouprank", "flows"):
        for p in (REPO / d).rglob("*.py"):
            read.update(pat.findall(p.read_text()))
    assert read, "the scan finds nothing: the pattern is wrong"
    assert {"GROUPRANK_DATA_ROOT", "GROUPRANK_TASK_RUNNER"} <= read
    known = set(executor.RESULT_ENV) | set(executor.NOT_RESULT_ENV)
    assert sorted(read - known) == []
    assert not set(executor.RESULT_ENV) & set(executor.NOT_RESULT_ENV)


# ------------------------------------------------------------------------------------------ the command, twice
def _cli(root: Path, args: list[str], env: dict) -> dict:
    p = subprocess.run([sys.executable, "-m", "grouprank.cli", *args, "--json"], cwd=root, env=env,
                       capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads(p.stdout)


@pytest.mark.timeout(600)
def test_editing_a_prompt_template_rejudges_and_rebuilds(tmp_path):
    """The same command after a template edit, in a copy of the package: the judge reruns and sends
    the edited prompt (its answers say which system prompt they saw); after a groupwise edit the
    datasets are rebuilt and carry the edited prompt."""
    from tests.support.fake_openai_server import start_local_server
    from tests.support.prefect_local import small_config
    from grouprank.paths import default_data_root
    root = _copy_sources(tmp_path / "src")
    (root / "tests").mkdir()
    work = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(root), "GROUPRANK_DATA_ROOT": str(default_data_root()),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with start_local_server("tests.support.responders:score_json_system") as srv:
        c = small_config(work, srv.base_url, name="edit")
        c["judges"]["judges"] = [j for j in c["judges"]["judges"] if j["kind"] != "local"]
        c["queries"]["max_queries"] = 3
        c["retrieval"].update(depth=20, pool_top=3, pool_sampled=2, pool_sample_from=[4, 20])
        (tmp_path / "cfg.json").write_text(json.dumps(c))
        args = ["build-datasets", "--config", str(tmp_path / "cfg.json")]

        first = _cli(root, args, env)
        assert first["stages"]["judge"]["state"] == "ran"
        sent = srv.stats(detail=False)["requests"]
        assert sent > 0
        again = _cli(root, args, env)  # nothing changed: nothing reruns, nothing is sent
        assert {v["state"] for v in again["stages"].values()} == {"cached"}
        assert srv.stats(detail=False)["requests"] == sent

        _edit(root / "grouprank/prompts/pointwise.py", 'SYSTEM_PROMPT = (\n', 'SYSTEM_PROMPT = (\n    "EDITEDPW. "\n')
        edited = _cli(root, args, env)
        st = {k: v["state"] for k, v in edited["stages"].items()}
        assert st["judge"] == "ran" and st["load"] == st["retrieve"] == "cached", st
        assert srv.stats(detail=False)["requests"] == 2 * sent  # every pair asked again, with the new text
        import pyarrow.parquet as pq
        rationale = pq.read_table(edited["stages"]["judge"]["outputs"]["judgments"]).column("rationale").to_pylist()
        assert rationale and all(r.startswith("system: EDITEDPW.") for r in rationale), rationale[:3]
        assert st["fuse"] == "ran"  # the answers changed with the prompt, so did the labels' inputs

        _edit(root / "grouprank/prompts/groupwise.py", 'SYSTEM_PROMPT = (\n', 'SYSTEM_PROMPT = (\n    "EDITEDGW. "\n')
        rebuilt = _cli(root, args, env)
        st = {k: v["state"] for k, v in rebuilt["stages"].items()}
        assert st["build_datasets"] == "ran" and st["retrieve"] == "cached", st
        sft = pq.read_table(rebuilt["stages"]["build_datasets"]["outputs"]["reranker_sft"]).to_pylist()
        assert sft and all("EDITEDGW." in json.dumps(r["messages"]) for r in sft)
