"""What the retriever and reranker trainings share (grouprank.trainer_support): one training at a time
per process, checkpoint folders that only resume the same training, progress closed on failure."""
from __future__ import annotations

import threading
import time

import pytest

from grouprank import trainer_support as ts


def test_trainings_in_threads_never_overlap():
    """The retriever and reranker stages run side by side in a threaded Prefect task runner; accelerate's
    global state breaks when two trainings set up at once, so `@exclusive` trainings take turns."""
    spans: list[tuple[str, float, float]] = []

    @ts.exclusive
    def training(name):
        t0 = time.monotonic()
        time.sleep(0.2)
        spans.append((name, t0, time.monotonic()))

    threads = [threading.Thread(target=training, args=(n,)) for n in ("retriever", "reranker", "other")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans.sort(key=lambda s: s[1])
    assert len(spans) == 3 and all(a[2] <= b[1] for a, b in zip(spans, spans[1:]))

    @ts.exclusive
    def outer():  # re-entrant: a training that calls another exclusive step does not deadlock
        return ts.exclusive(lambda: "inner")()
    assert outer() == "inner"


def test_checkpoint_folder_resumes_only_the_same_training(tmp_path):
    scratch = tmp_path / "sft"
    fp = ts.fingerprint("sft", {"lr": 1e-4}, [{"q": "a"}])
    assert fp == ts.fingerprint("sft", {"lr": 1e-4}, [{"q": "a"}]) != ts.fingerprint("sft", {"lr": 2e-4}, [{"q": "a"}])
    assert ts.open_checkpoints(scratch, fp, "t") is None and (scratch / "fingerprint").read_text() == fp
    for step, complete in ((2, True), (4, True), (6, False)):  # checkpoint-6 was being written when killed
        d = scratch / f"checkpoint-{step}"
        d.mkdir()
        (d / "trainer_state.json").write_text("{}")
        if complete:
            (d / "optimizer.pt").write_bytes(b"x")
            (d / "model.safetensors").write_bytes(b"x")
    resume = ts.open_checkpoints(scratch, fp, "t")
    assert resume.name == "checkpoint-4" and ts.checkpoint_step(resume) == 4
    assert not (scratch / "checkpoint-6").exists()  # the incomplete one is removed
    assert ts.open_checkpoints(scratch, ts.fingerprint("other"), "t") is None  # other settings: all removed
    assert not list(scratch.glob("checkpoint-*"))


def test_failed_training_closes_its_progress():
    """A training that raises never reaches on_train_end: `train` still stops the progress heartbeat."""
    cb = ts.progress_callback("grpo", every_s=0.1)

    class State:
        max_steps, global_step = 4, 0

    class Handler:
        callbacks = [cb]

    class Trainer:
        callback_handler = Handler()

        def train(self, resume_from_checkpoint=None):
            cb.on_train_begin(None, State(), None)
            raise RuntimeError("diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        ts.train(Trainer())
    assert cb.prog is None
