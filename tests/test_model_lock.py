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


def _stages(flag: bool, body_of):
    return [Stage(name=f"s{i}", run=body_of(f"s{i}"), builds_models=flag) for i in range(3)]


def _overlap(spans) -> bool:
    s = sorted(spans.values())
    return any(b[0] < a[1] for a, b in zip(s, s[1:]))


def test_model_building_stages_take_turns_in_threads(tmp_path):
    """transformers swaps PreTrainedModel.tie_weights for a no-op and sets torch's default dtype while it
    builds a model: a main job's reranker checkpoint, loaded while the retriever stage loaded MiniLM in
    another thread, came out with a random lm_head. Such stages must never overlap; the others may."""
    cfg = RunConfig.model_validate({"work_dir": str(tmp_path)})
    for flag in (True, False):
        spans: dict = {}
        start = threading.Barrier(3)

        def body_of(name):
            def run(inputs, cfg, ctx):
                t0 = time.monotonic()
                time.sleep(0.3)
                spans[name] = (t0, time.monotonic())
                return StageResult()
            return run

        def go(st):
            start.wait()
            executor.run_stage(st, cfg, {})

        threads = [threading.Thread(target=go, args=(st,)) for st in _stages(flag, body_of)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(spans) == 3
        assert _overlap(spans) is (not flag)


def test_exclusive_trainings_take_turns_and_reenter():
    spans: list[tuple[float, float]] = []

    @exclusive
    def training():
        t0 = time.monotonic()
        time.sleep(0.2)
        spans.append((t0, time.monotonic()))

    threads = [threading.Thread(target=training) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(spans) == 3 and not _overlap({i: s for i, s in enumerate(spans)})

    @exclusive
    def outer():  # a training that calls another exclusive step does not deadlock
        return exclusive(lambda: "inner")()
    assert outer() == "inner"


def test_every_stage_that_builds_models_is_declared_so():
    """The stages that load encoders or policies in process; the light ones (Parquet in, Parquet out)
    stay free to run beside them."""
    flagged = {name for name, s in all_stages().items() if s.builds_models}
    assert flagged == {"mine_queries", "retrieve", "judge", "train_reranker", "train_retriever", "evaluate"}
