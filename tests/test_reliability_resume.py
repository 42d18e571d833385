"""Checkpointed retriever training (issue 18, item 6): a training killed with SIGKILL after a
checkpoint resumes from it when rerun (fewer steps run the second time), and the checkpoint folder
is gone once the model is saved. Real SentenceTransformerTrainer on all-MiniLM-L6-v2."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_reliability_training import cfg, frame

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[1]

KILLED = r"""
import os, signal, sys
from transformers import TrainerCallback
from grouprank.retriever_training.train import train_model
from tests.test_reliability_training import cfg, frame

class Kill(TrainerCallback):
    def on_save(self, args, state, control, **kw):   # called once the checkpoint is on disk
        if state.global_step == 4:
            os.kill(os.getpid(), signal.SIGKILL)

train_model(frame(), cfg(max_steps=6, checkpoint_steps=2), sys.argv[1], callbacks=[Kill()])
"""


class Steps:
    def __init__(self):
        from transformers import TrainerCallback

        outer = self
        self.n = 0

        class C(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                outer.n += 1
        self.cb = C()


def test_killed_training_resumes_from_its_last_checkpoint(tmp_path):
    from grouprank.retriever_training.train import checkpoint_dir, train_model
    out = tmp_path / "model"
    p = subprocess.run([sys.executable, "-c", KILLED, str(out)], cwd=REPO, capture_output=True, text=True,
                       timeout=240, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert p.returncode == -9, p.stderr[-3000:]
    ck = checkpoint_dir(out)
    assert (ck / "checkpoint-4" / "trainer_state.json").is_file() and not out.exists()

    steps = Steps()
    res = train_model(frame(), cfg(max_steps=6, checkpoint_steps=2), out, callbacks=[steps.cb])
    assert res.resumed_from == 4 and res.steps == 6
    assert steps.n == 2  # only the steps after the checkpoint ran again
    assert out.is_dir() and not ck.exists()  # checkpoints removed once the model is saved

    # other settings: the old checkpoints are not used
    ck.mkdir()
    (ck / "fingerprint").write_text("something else")
    (ck / "checkpoint-4").mkdir()
    steps2 = Steps()
    res2 = train_model(frame(), cfg(max_steps=3, checkpoint_steps=2), out, callbacks=[steps2.cb])
    assert res2.resumed_from is None and steps2.n == 3 and not ck.exists()
