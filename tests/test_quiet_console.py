"""A quiet console off a terminal (grouprank.console, grouprank.trainer_support): a short run of the
`grouprank` command (Cranfield, 6 queries, the offline local judge, the tiny reranker's SFT + GRPO
with its held-out check, two retriever training steps) with its output captured, as a log file or CI
has it: no carriage-return progress bar (the trainers', transformers' "Loading weights" / "Writing
model shards", the encoders'), no metrics dict printed by a Trainer; the metrics and the progress
reach the log as lines of their own."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.support.prefect_local import REPO, small_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# transformers' PrinterCallback / ProgressCallback print each log dict like this
TRAINER_DICT = re.compile(r"\{'(loss|train_runtime|train_loss|grad_norm|learning_rate|epoch|reward)'")


def test_non_terminal_run_has_no_bars_and_no_trainer_dicts(tmp_path):
    cfg = small_config(tmp_path / "work", None, name="quiet")
    cfg["reranker"]["heldout_fraction"] = 0.3  # the held-out check loads the saved policy again
    path = tmp_path / "run.json"
    path.write_text(json.dumps(cfg))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE",
                                                           "HF_DATASETS_DISABLE_PROGRESS_BARS")}
    env.update({"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "GROUPRANK_PROGRESS_EVERY_S": "1"})
    r = subprocess.run([sys.executable, "-m", "grouprank.cli", "run", "--config", str(path),
                        "--stages", "train_reranker,train_retriever"], cwd=str(REPO), env=env,
                       capture_output=True, text=True, timeout=580)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-5000:]
    assert "\r" not in out, [ln for ln in out.split("\n") if "\r" in ln][:5]
    assert not TRAINER_DICT.search(out), TRAINER_DICT.search(out).group(0)
    # what the bars and dicts carried comes as log lines
    assert re.search(r"grouprank\.trainer_support: reranker SFT: step \d+: .*loss ", out), out[-3000:]
    assert re.search(r"grouprank\.trainer_support: reranker GRPO: step \d+: ", out)
    assert re.search(r"grouprank\.trainer_support: retriever training: step \d+: .*train_runtime ", out)
    assert re.search(r"grouprank\.progress: reranker GRPO: \d+/\d+ steps", out)
    # no log line glued behind anything: every line starts with its time stamp, or belongs to a
    # multi-line message (a traceback, the pipeline's own summary lines)
    stamped = [ln for ln in out.splitlines() if re.match(r"\d\d:\d\d:\d\d (INFO|WARNING|ERROR) ", ln)]
    assert stamped and not any(re.search(r".\d\d:\d\d:\d\d (INFO|WARNING) grouprank", ln[1:]) for ln in stamped)
