"""One model-building job at a time per process (grouprank.model_lock): stages declared with
`builds_models` take turns in the executor, whichever thread runs them; others do not wait."""
from __future__ import annotations

import threading
import time

from grouprank import executor
from grouprank.config import RunConfig
from grouprank.model_lock import exclusive
from grouprank.stage import Stage, StageResult
from grouprank.stage_list import all_stages


def _timed(spans: list, seconds: float = 0.3) -> None:
    t0 = time.monotonic()
    time.sleep(seconds)
    spans.append((t0, time.monotonic()))


def _timed_stage(name: str, spans: list, builds_models: bool) -> Stage:
    def run(inputs, cfg, ctx):
        _timed(spans)
        return StageResult()
    return Stage(name=name, run=run, builds_models=builds_models)


def _concurrently(calls) -> None:
    """Start every call in its own thread at the same moment; wait for all."""
    start = threading.Barrier(len(calls))

    def go(call):
        start.wait()
        call()

    threads = [threading.Thread(target=go, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _overlap(spans) -> bool:
    s = sorted(spans)
    return any(b[0] < a[1] for a, b in zip(s, s[1:]))


def test_model_building_stages_take_turns_in_threads(tmp_path):
    """transformers swaps PreTrainedModel.tie_weights for a no-op and sets torch's default dtype while it
    builds a model: a main job's reranker checkpoint, loaded while the retriever stage loaded MiniLM in
    another thread, came out with a random lm_head. Such stages must never overlap; the others may."""
    cfg = RunConfig.model_validate({"work_dir": str(tmp_path)})
    for flag in (True, False):
        spans: list = []
        stages = [_timed_stage(f"s{i}", spans, flag) for i in range(3)]
        _concurrently([lambda st=st: executor.run_stage(st, cfg, {}) for st in stages])
        assert len(spans) == 3
        assert _overlap(spans) is (not flag)


def test_exclusive_trainings_take_turns_and_reenter():
    spans: list = []
    training = exclusive(lambda: _timed(spans, 0.2))
    _concurrently([training] * 3)
    assert len(spans) == 3 and not _overlap(spans)

    @exclusive
    def outer():  # a training that calls another exclusive step does not deadlock
        return exclusive(lambda: "inner")()
    assert outer() == "inner"


def test_every_stage_that_builds_models_is_declared_so():
    """The stages that load encoders or policies in process; the light ones (Parquet in, Parquet out)
    stay free to run beside them."""
    flagged = {name for name, s in all_stages().items() if s.builds_models}
    assert flagged == {"mine_queries", "retrieve", "judge", "train_reranker", "train_retriever", "evaluate",
                       "adapt"}


def test_lock_wait_is_logged_and_counted_apart_from_the_work(tmp_path, caplog):
    """Two model-building stages at once: the one that waited says so (waiting, then got the lock
    after N s) and its stats carry the wait apart from its own work (model_lock_wait_s + work_s)."""
    import logging
    caplog.set_level(logging.INFO, logger="grouprank.model_lock")
    cfg = RunConfig.model_validate({"work_dir": str(tmp_path)})
    spans: list = []
    recs: dict = {}
    stages = [_timed_stage(f"w{i}", spans, True) for i in range(2)]
    _concurrently([lambda st=st: recs.__setitem__(st.name, executor.run_stage(st, cfg, {})) for st in stages])
    waits = sorted(r["stats"]["model_lock_wait_s"] for r in recs.values())
    assert waits[0] < 0.1 and 0.2 <= waits[1] <= 1.0, waits
    waited = max(recs.values(), key=lambda r: r["stats"]["model_lock_wait_s"])
    assert abs(waited["stats"]["work_s"] + waited["stats"]["model_lock_wait_s"] - waited["wall_s"]) < 0.02
    assert 0.25 <= waited["stats"]["work_s"] < 0.5  # its own 0.3 s sleep, not the other's
    msgs = [r.getMessage() for r in caplog.records]
    assert any(m == f"stage {waited['stage']}: waiting for the model lock (one model-building stage at a time "
               "per process)" for m in msgs)
    assert any(m.startswith(f"stage {waited['stage']}: got the model lock after waiting 0.") for m in msgs)
    free = executor.run_stage(_timed_stage("free", spans, False), cfg, {})
    assert "model_lock_wait_s" not in free["stats"]  # a stage that builds no model never waits
