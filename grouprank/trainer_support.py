"""What every `transformers.Trainer` run of the project shares (retriever and reranker training):
resumable checkpoints and progress logs. One training at a time per process: `grouprank.model_lock`.

- `open_checkpoints(scratch, fingerprint)`: the checkpoint folder of one training, emptied when it
  holds checkpoints of other examples or settings (a `fingerprint` file says which), and the newest
  complete checkpoint to resume from (an incomplete one, killed while saving, is removed);
- `train(trainer, resume)`: `trainer.train()`, closing the progress log even when training fails;
- `drop_checkpoints(scratch)`: once the model is saved;
- `progress_callback(label)`: a TrainerCallback that logs "label: 12/45 steps (26.7%), 0.4 steps/s,
  elapsed 30s, ETA 1m22s, loss 0.81" at most every 30 s (GROUPRANK_PROGRESS_EVERY_S) through
  `grouprank.progress.Progress`, so a long training is never silent; and the trainer's metrics
  ("label: step 12: loss 0.81, grad_norm 1.02, ...") through the logger, which `train` makes the only
  place they go (transformers would print each dict).
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from grouprank.progress import Progress

log = logging.getLogger(__name__)


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able parts (examples, settings, base model, seed)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, ensure_ascii=False,
                            default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
                 .encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def last_checkpoint(scratch: Path) -> Path | None:
    """The newest complete checkpoint (model weights, optimizer and trainer state all written); an
    incomplete one (killed while saving) is removed."""
    def step(p: Path) -> int:
        tail = p.name.rsplit("-", 1)[1]
        return int(tail) if tail.isdigit() else -1
    best = None
    for d in sorted(scratch.glob("checkpoint-*"), key=step):
        complete = ((d / "trainer_state.json").is_file() and (d / "optimizer.pt").is_file()
                    and any(d.glob("*.safetensors")))
        if complete:
            best = d
        else:
            shutil.rmtree(d, ignore_errors=True)
    return best


def open_checkpoints(scratch: str | Path, fp: str, label: str) -> Path | None:
    """Prepare `scratch` for the training fingerprinted `fp`; return the checkpoint to resume from."""
    scratch = Path(scratch)
    marker = scratch / "fingerprint"
    if scratch.exists() and (not marker.is_file() or marker.read_text() != fp):
        log.info("%s: checkpoints in %s are for other examples or settings: removed", label, scratch)
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    marker.write_text(fp)
    resume = last_checkpoint(scratch)
    if resume is not None:
        log.info("%s: resuming from %s", label, resume.name)
    return resume


def drop_checkpoints(scratch: str | Path) -> None:
    """Remove the checkpoints of a training whose model is saved (the folder itself stays: trainers
    may keep other outputs there)."""
    scratch = Path(scratch)
    for d in scratch.glob("checkpoint-*"):
        shutil.rmtree(d, ignore_errors=True)
    (scratch / "fingerprint").unlink(missing_ok=True)


def checkpoint_step(path: Path | None) -> int | None:
    return int(path.name.rsplit("-", 1)[1]) if path is not None else None


def _quiet_callbacks(trainer) -> None:
    """No metrics dict printed: transformers prints each log dict (`PrinterCallback`, added when
    `disable_tqdm`; `ProgressCallback` writes it under its bar). Our progress callback logs the
    metrics through the project's logger instead; on a terminal the bar stays, without the dicts."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class BarOnly(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    h = trainer.callback_handler
    h.callbacks = [BarOnly() if type(cb) is ProgressCallback else cb for cb in h.callbacks
                   if type(cb) is not PrinterCallback]


def train(trainer, resume: Path | None = None):
    """`trainer.train(resume_from_checkpoint=resume)`, the progress log closed even when it fails."""
    _quiet_callbacks(trainer)
    try:
        return trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    finally:
        for cb in trainer.callback_handler.callbacks:  # a failed training never reached on_train_end
            if hasattr(cb, "close_progress"):
                cb.close_progress()


def metrics_text(logs: dict) -> str:
    """A trainer's log dict as `loss 0.8123, grad_norm 1.02, learning_rate 5e-05` (numbers to 4 significant
    digits; non-numbers as they are)."""
    out = []
    for k, v in logs.items():
        out.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    return ", ".join(out)


def progress_callback(label: str, every_s: float | None = None):
    """A transformers TrainerCallback logging optimizer steps with rate, ETA and the last loss."""
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        def __init__(self):
            self.prog: Progress | None = None
            self.loss: float | None = None

        def on_train_begin(self, args, state, control, **kw):
            self.prog = Progress(label, total=int(state.max_steps or 0), unit="steps", every_s=every_s, bar=False,
                                 heartbeat=True, start=int(state.global_step or 0), suffix=self._suffix)

        def _suffix(self) -> str:
            return f", loss {self.loss:.4g}" if self.loss is not None else ""

        def on_log(self, args, state, control, logs=None, **kw):
            for key in ("loss", "train_loss"):
                if logs and isinstance(logs.get(key), (int, float)):
                    self.loss = float(logs[key])
                    break
            if logs:  # the trainer's metrics, through the logger (transformers would print the dict)
                log.info("%s: step %d: %s", label, int(state.global_step or 0), metrics_text(logs))

        def on_step_end(self, args, state, control, **kw):
            if self.prog is not None:
                self.prog.update(int(state.global_step) - self.prog.done)

        def on_train_end(self, args, state, control, **kw):
            self.close_progress()

        def close_progress(self):
            if self.prog is not None:
                self.prog.close()
                self.prog = None

    return _Progress()
