"""What the retriever and reranker trainings share (grouprank.trainer_support): checkpoint folders that
only resume the same training, progress closed on failure. One training at a time: test_model_lock.py."""
from __future__ import annotations

import pytest

from grouprank import trainer_support as ts


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


def test_trainer_metrics_go_through_the_logger_not_print(caplog, capsys):
    """`train` drops transformers' PrinterCallback (it prints every log dict when disable_tqdm) and keeps
    a terminal's bar without the dicts; our callback logs the metrics as one line."""
    import logging

    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    caplog.set_level(logging.INFO, logger="grouprank.trainer_support")
    cb = ts.progress_callback("reranker GRPO", every_s=0)

    class State:
        max_steps, global_step, is_world_process_zero = 4, 3, True

    class Handler:
        callbacks = [PrinterCallback(), ProgressCallback(), cb]

    class Trainer:
        callback_handler = Handler()

        def train(self, resume_from_checkpoint=None):
            cb.on_train_begin(None, State(), None)
            for c in self.callback_handler.callbacks:
                c.on_log(None, State(), None, logs={"loss": 0.81234, "reward": 1.5, "epoch": 1})
            cb.on_train_end(None, State(), None)

    ts.train(Trainer())
    kinds = [type(c) for c in Trainer.callback_handler.callbacks]
    assert PrinterCallback not in kinds and ProgressCallback not in kinds
    assert any(issubclass(k, ProgressCallback) for k in kinds)  # the bar-only variant
    assert "{'loss'" not in capsys.readouterr().out
    assert "reranker GRPO: step 3: loss 0.8123, reward 1.5, epoch 1" in [r.getMessage() for r in caplog.records]
