"""The stage list, the derived wiring, cache keys, the executor's I/O and the in-process runner's resume."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pytest

from data_schemas import QUERIES, RUNS, SchemaError
from grouprank import executor
from grouprank.config import JudgeSpec, RunConfig
from grouprank.stage import Stage, StageResult, TableOut, file, table
from grouprank.stage_list import all_stages, levels, plan, upstream, wiring, wiring_of

REPO = Path(__file__).resolve().parents[1]
ORDER = ["load", "mine_queries", "retrieve", "judge", "fuse", "build_datasets", "export", "train_retriever",
         "train_reranker", "evaluate", "adapt"]


# ------------------------------------------------------------------------------ the stage list
def test_stage_list_and_derived_wiring():
    every = all_stages()
    assert list(every) == ORDER
    assert wiring_of("retrieve") == {"documents": ("load", "documents"),
                                     "mined_queries": ("mine_queries", "mined_queries")}
    assert wiring_of("evaluate")["retriever_model"] == ("train_retriever", "retriever_model")
    assert wiring_of("export")["qrels"] == ("load", "qrels")
    seen: set[str] = set()
    for name, st in every.items():  # topological: inputs come from earlier stages only
        assert set(upstream(name)) <= seen, name
        seen.add(name)
        assert st.package.startswith("grouprank.") and st.title


def test_each_stage_is_declared_in_exactly_one_place():
    """A stage's name appears in one Stage(...) declaration in grouprank/ and nowhere else as a
    declaration (no second registry, no per-stage flow module)."""
    sources = {p: p.read_text() for p in (REPO / "grouprank").rglob("*.py")}
    for name in ORDER:
        hits = [p for p, s in sources.items() if re.search(rf'Stage\(\s*name="{name}"', s)]
        assert len(hits) == 1, (name, hits)
    assert not [p for p in (REPO / "flows").glob("*.py") if p.stem in ORDER]


def test_wiring_refuses_dangling_and_ambiguous_ports():
    run = lambda i, c, x: StageResult()  # noqa: E731
    a = Stage("a", run, outputs=(table("t", QUERIES),))
    b = Stage("b", run, inputs=(table("u", QUERIES),))
    with pytest.raises(ValueError, match="no earlier stage produces input 'u'"):
        wiring((a, b))
    with pytest.raises(ValueError, match="declared by both"):
        wiring((a, Stage("c", run, outputs=(table("t", QUERIES),))))
    assert wiring((a, Stage("d", run, inputs=(table("t", QUERIES),))))["d"] == {"t": ("a", "t")}


def test_plan_and_levels_follow_the_wiring():
    assert [s.name for s in plan(["judge"])] == ["load", "mine_queries", "retrieve", "judge"]
    assert [s.name for s in plan(["fuse"])] == ["load", "mine_queries", "retrieve", "judge", "fuse"]
    waves = levels(plan(None))
    assert [s.name for s in waves[0]] == ["load"]
    pos = {s.name: i for i, w in enumerate(waves) for s in w}
    assert pos["export"] == pos["train_retriever"] == pos["train_reranker"] == pos["build_datasets"] + 1
    assert pos["evaluate"] == pos["train_retriever"] + 1
    with pytest.raises(KeyError):
        plan(["no_such_stage"])


# ------------------------------------------------------------------------------ cache keys
def test_config_keys_change_only_with_the_sections_a_stage_reads(tmp_path):
    every = all_stages()
    base = RunConfig(work_dir=str(tmp_path))
    new_judge = base.model_copy(deep=True)
    new_judge.judges.judges = [JudgeSpec(id="pw", kind="pointwise")]
    new_beta = base.model_copy(deep=True)
    new_beta.judges.beta = 0.3
    new_ds = base.model_copy(deep=True)
    new_ds.datasets.groups_per_query = 7
    other_dir = base.model_copy(update={"work_dir": str(tmp_path / "other")})

    def key(stage, cfg):
        return executor.config_key(every[stage], cfg)

    for up in ("load", "mine_queries", "retrieve"):
        assert key(up, new_judge) == key(up, base) == key(up, new_beta) == key(up, new_ds)
    assert key("judge", new_judge) != key("judge", base)
    assert key("judge", new_beta) == key("judge", base)          # fusion-only field
    assert key("fuse", new_beta) != key("fuse", base)
    assert key("build_datasets", new_ds) != key("build_datasets", base)
    assert key("judge", new_ds) == key("judge", base)
    assert key("load", other_dir) != key("load", base)            # outputs live in the work dir
    assert every["judge"].needs_llm(new_judge) and not every["judge"].needs_llm(base)


def test_cache_key_depends_on_input_content_config_and_source(tmp_path):
    st = all_stages()["retrieve"]
    cfg = RunConfig(work_dir=str(tmp_path))
    k1 = executor.cache_key(st, cfg, {"documents": "a", "mined_queries": "b"})
    assert k1 == executor.cache_key(st, cfg, {"mined_queries": "b", "documents": "a"})
    assert k1 != executor.cache_key(st, cfg, {"documents": "a", "mined_queries": "c"})
    cfg2 = cfg.model_copy(deep=True)
    cfg2.retrieval.depth = 77
    assert k1 != executor.cache_key(st, cfg2, {"documents": "a", "mined_queries": "b"})
    cfg3 = cfg.model_copy(deep=True)
    cfg3.datasets.group_max = 9
    assert k1 == executor.cache_key(st, cfg3, {"documents": "a", "mined_queries": "b"})
    assert executor.source_key(st) != executor.source_key(all_stages()["judge"])


def test_fingerprints_and_stale_outputs(tmp_path):
    f = tmp_path / "t.parquet"
    f.write_bytes(b"one")
    d = tmp_path / "dir"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "x.txt").write_text("x")
    assert executor.fingerprint(tmp_path / "missing") == "absent"
    assert executor.fingerprint(d).startswith("dir:")
    rec = {"outputs": {"t": str(f), "d": str(d)}}
    rec["fingerprints"] = executor.fingerprints(rec["outputs"])
    assert executor.stale_outputs(rec) == []
    f.write_bytes(b"two")
    (d / "sub" / "x.txt").write_text("y")
    assert sorted(executor.stale_outputs(rec)) == ["d", "t"]


# ------------------------------------------------------------------------------ executor I/O
def _toy(run, **kw) -> Stage:
    return Stage("toy", run, inputs=(table("queries", QUERIES),),
                 outputs=(table("runs", RUNS), file("note", "note.txt"), table("extra_runs", RUNS, optional=True)),
                 **kw)


def _queries_file(tmp_path) -> Path:
    t = QUERIES.from_records([{"query_id": "q1", "text": "what", "split": "test", "source": "existing",
                               "collection": "c", "decision": "kept"}], validate=False)
    return QUERIES.write(t, tmp_path / "q.parquet", validate=False)


def test_executor_reads_inputs_and_writes_declared_outputs(tmp_path):
    seen = {}

    def run(inputs, cfg, ctx):
        seen["queries"] = inputs["queries"]
        (ctx.out_dir / "note.txt").write_text("hello")
        runs = RUNS.from_records([{"query_id": "q1", "doc_id": "d1", "rank": 1, "score": 1.5, "system": "s"}])
        return StageResult({"runs": TableOut(runs, {"made_by": "toy"}), "note": ctx.out_dir / "note.txt"},
                           {"n": 1})

    cfg = RunConfig(work_dir=str(tmp_path / "w"))
    rec = executor.run_stage(_toy(run), cfg, {"queries": _queries_file(tmp_path)})
    assert isinstance(seen["queries"], pa.Table) and seen["queries"]["query_id"].to_pylist() == ["q1"]
    out = Path(rec["outputs"]["runs"])
    assert out == tmp_path / "w" / "toy" / "runs.parquet"
    assert RUNS.read(out)["score"].to_pylist() == [1.5]
    from data_schemas import read_extra
    assert read_extra(out) == {"made_by": "toy"}
    assert set(rec["outputs"]) == {"runs", "note"} and rec["stats"] == {"n": 1}
    assert rec["fingerprints"]["note"] == executor.fingerprint(tmp_path / "w" / "toy" / "note.txt")


def test_executor_refuses_undeclared_missing_and_mistyped(tmp_path):
    cfg = RunConfig(work_dir=str(tmp_path / "w"))
    q = _queries_file(tmp_path)
    with pytest.raises(RuntimeError, match="did not produce its output 'runs'"):
        executor.run_stage(_toy(lambda i, c, x: StageResult({})), cfg, {"queries": q})
    with pytest.raises(RuntimeError, match="undeclared outputs"):
        executor.run_stage(_toy(lambda i, c, x: StageResult({"bogus": 1})), cfg, {"queries": q})
    from grouprank.errors import UserError
    with pytest.raises(UserError, match="missing input 'queries'"):
        executor.run_stage(_toy(lambda i, c, x: StageResult({})), cfg, {})
    runs_file = RUNS.write(RUNS.from_records([{"query_id": "q", "doc_id": "d", "rank": 1, "score": 0.0,
                                              "system": "s"}]), tmp_path / "r.parquet")
    with pytest.raises(SchemaError):  # a RUNS file where QUERIES is declared
        executor.run_stage(_toy(lambda i, c, x: StageResult({})), cfg, {"queries": runs_file})


# ------------------------------------------------------------------------------ runner resume
def test_runner_reuses_finished_stages_and_reruns_changed_ones(tmp_path):
    cfg = RunConfig.load(None, {"work_dir": str(tmp_path / "w"), "data.collection": "cranfield"})
    lines: list[str] = []
    s1 = executor.run_pipeline(cfg, ["load"], log_fn=lines.append)
    assert s1["stages"]["load"]["state"] == "ran"
    assert s1["stages"]["load"]["stats"]["documents"] == 1400
    record = json.loads((tmp_path / "w" / "_stages" / "load.json").read_text())
    assert record["outputs"]["documents"].endswith("collection/documents.parquet")
    s2 = executor.run_pipeline(cfg, ["load"], log_fn=lines.append)
    assert s2["stages"]["load"]["state"] == "cached"
    Path(record["outputs"]["qrels"]).write_bytes(b"clobbered")  # an output changed on disk: rerun
    s3 = executor.run_pipeline(cfg, ["load"], log_fn=lines.append)
    assert s3["stages"]["load"]["state"] == "ran"
    assert executor.fingerprint(record["outputs"]["qrels"]) == record["fingerprints"]["qrels"]
    other = cfg.model_copy(deep=True)
    other.data.quarantine = True  # another config for the stage: another key
    assert executor.run_pipeline(other, ["load"], log_fn=lines.append)["stages"]["load"]["state"] == "ran"


def test_stage_reaches_its_llm_client_through_the_context_and_its_calls_are_recorded(tmp_path):
    """`ctx.llm_client` builds the endpoint's client once (the run's answer cache); the record's `llm`
    counts the HTTP calls and cache answers of the clients the stage made, apart from its stats (no
    layer recovers them from stat names)."""
    from grouprank.llm import LLMRequest
    from tests.support.fake_openai_server import start_local_server

    def run(inputs, cfg, ctx):
        client = ctx.llm_client(purpose="toy")
        assert ctx.llm_client(purpose="toy") is client          # built once per stage run
        res = client.map([LLMRequest(messages=[{"role": "user", "content": f"say {i}"}], template_version="toy@1")
                          for i in range(3)])
        (ctx.out_dir / "note.txt").write_text("|".join(r.text or "" for r in res))
        runs = RUNS.from_records([{"query_id": "q1", "doc_id": "d1", "rank": 1, "score": 1.0, "system": "s"}])
        return StageResult({"runs": runs, "note": ctx.out_dir / "note.txt"}, {"calls": 99})  # a stat, not a count

    st = Stage("toy", run, inputs=(table("queries", QUERIES),),
               outputs=(table("runs", RUNS), file("note", "note.txt")), sections=("llm",))
    with start_local_server("echo") as srv:
        cfg = RunConfig.model_validate({"work_dir": str(tmp_path / "w"), "llm": {"endpoints": [
            {"name": "fake", "base_url": srv.base_url, "model": "local", "max_concurrency": 2}]}})
        q = _queries_file(tmp_path)
        first = executor.run_stage(st, cfg, {"queries": q})
        again = executor.run_stage(st, cfg, {"queries": q})      # the same prompts: from the answer cache
        sent = srv.stats(detail=False)
    assert first["llm"] == {"calls": 3, "cached_calls": 0} and first["stats"]["calls"] == 99
    assert again["llm"] == {"calls": 0, "cached_calls": 3}
    assert (tmp_path / "w" / "llm_cache.sqlite").exists()
    assert sent["requests"] == 3, sent                        # the server saw the first run only
    s = executor.summarise(cfg, {"toy": again}, {"toy": "ran"})
    assert s["llm"]["calls"] == 0 and s["llm"]["cached_calls"] == 3
