"""Checkpointed reranker training (issue 18, item 6): SFT then GRPO on the tiny policy, killed with
SIGKILL right after GRPO's first checkpoint; the rerun takes SFT's final checkpoint (no SFT step runs
again) and continues GRPO from its checkpoint (only the remaining GRPO steps run). Real TRL trainers."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[1]

SETUP = r"""
from grouprank.collections import load_collection
from grouprank.config import RunConfig
from grouprank.reranker.data import groups_from_qrels

def data_and_cfg(work):
    coll = load_collection("trec_dl19_passage")
    qids = sorted(set(coll.qrels["query_id"].to_pylist()))[:3]
    rl, sft = groups_from_qrels(coll, group_sizes=(3,), groups_per_query=2, max_doc_chars=60, query_ids=qids)
    cfg = RunConfig.load(None, {"work_dir": work, "reranker.base_model": "tiny", "reranker.sft_epochs": 1.0,
                                "reranker.bf16": False, "reranker.per_device_batch_size": 2,
                                "reranker.grpo_steps": 4, "reranker.num_generations": 2,
                                "reranker.max_completion_length": 16, "reranker.checkpoint_steps": 2,
                                "reranker.sft_args": {"logging_steps": 1}})
    return cfg, sft, rl
"""

KILLED = SETUP + r"""
import os, signal, sys
from transformers import TrainerCallback
from grouprank.reranker.train import train_reranker

class KillInGRPO(TrainerCallback):
    trainings = 0
    def on_train_begin(self, args, state, control, **kw):
        KillInGRPO.trainings += 1
    def on_save(self, args, state, control, **kw):   # the checkpoint is on disk
        if KillInGRPO.trainings == 2 and state.global_step == 2:
            os.kill(os.getpid(), signal.SIGKILL)

cfg, sft, rl = data_and_cfg(sys.argv[2])
train_reranker(cfg, sft, rl, sys.argv[1], callbacks=[KillInGRPO()])
"""


def test_killed_reranker_training_resumes_sft_and_grpo_from_checkpoints(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-c", KILLED, str(out), str(tmp_path / "w")], cwd=REPO,
                       capture_output=True, text=True, timeout=240, env=env)
    assert p.returncode == -9, p.stderr[-3000:]
    sft_cks = sorted((out / "sft").glob("checkpoint-*"))
    assert [c.name for c in sft_cks] == ["checkpoint-3"]  # 6 groups / 2 per step; the last one kept
    assert (out / "grpo" / "checkpoint-2" / "trainer_state.json").is_file() and not (out / "final").exists()

    from transformers import TrainerCallback

    from grouprank.reranker.train import train_reranker
    ns = {}
    exec(SETUP, ns)
    cfg, sft, rl = ns["data_and_cfg"](str(tmp_path / "w"))
    steps: list[tuple[int, int]] = []

    class Count(TrainerCallback):
        phase = 0

        def on_train_begin(self, args, state, control, **kw):
            Count.phase += 1

        def on_step_end(self, args, state, control, **kw):
            steps.append((Count.phase, state.global_step))

    summary = train_reranker(cfg, sft, rl, out, callbacks=[Count()])
    assert summary["sft_resumed_from"] == 3 and summary["grpo_resumed_from"] == 2
    assert steps == [(2, 3), (2, 4)]  # no SFT step again; GRPO steps 3 and 4 only
    assert len(summary["sft_loss"]) == 3 and len(summary["grpo_reward"]) == 4  # the logs before the kill kept
    assert (out / "final" / "model.safetensors").is_file()
    assert not list(out.glob("*/checkpoint-*"))  # checkpoints removed once the model is saved

    # a rerun with other settings does not take the (new) checkpoints of this one
    (out / "sft" / "checkpoint-3").mkdir()
    (out / "sft" / "fingerprint").write_text("other examples")
    steps.clear()
    Count.phase = 0
    cfg.reranker.grpo_steps = 1
    summary = train_reranker(cfg, sft, rl, out, callbacks=[Count()])
    assert summary["sft_resumed_from"] is None and summary["grpo_resumed_from"] is None
    assert [s for s in steps if s[0] == 1] == [(1, i) for i in range(1, 4)] and [s for s in steps if s[0] == 2] == [(2, 1)]
