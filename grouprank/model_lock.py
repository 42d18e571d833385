"""One model-building job at a time per process.

Prefect's threaded task runner runs independent stages side by side (the reranker and the retriever
stages both follow build_datasets). Building models is not thread-safe:

- `transformers.PreTrainedModel.from_pretrained` swaps the class method `PreTrainedModel.tie_weights`
  for a no-op while it constructs a model and sets torch's process-wide default dtype. A model loaded
  by another thread in that window is never tied (measured in a main job: the trained SmolLM2
  reranker's `lm_head` came out "MISSING ... newly initialized", random, so its held-out format
  validity was 0 and its ranking constant), and the retriever's training, started at the same
  moment, failed with "mixed dtype (CPU)". Interleaved swaps can also leave the no-op in place for the
  rest of the process.
- accelerate's global state: `TrainingArguments(use_cpu=True)` resets it, so two trainings set up at
  once broke with "AcceleratorState object has no attribute distributed_type".

So every stage declared with `builds_models=True` runs under one re-entrant process-wide lock
(`grouprank.executor.run_stage`), and `@exclusive` puts the same lock around a training called
directly (CLI commands, benches). On a CPU the stages only share the same cores anyway.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

_LOCK = threading.RLock()


@dataclass
class Wait:
    """How long a holder of the lock waited for it (seconds; 0 when it was free)."""
    waited_s: float = 0.0


@contextlib.contextmanager
def held(label: str | None = None):
    """Hold the process-wide model lock; says so in the log when it has to wait (`label`: who waits),
    and how long it waited once it has it. Yields a `Wait` (the executor puts it in the stage's
    stats apart from the work)."""
    w = Wait()
    if not _LOCK.acquire(blocking=False):
        if label:
            log.info("%s: waiting for the model lock (one model-building stage at a time per process)", label)
        t0 = time.monotonic()
        _LOCK.acquire()
        w.waited_s = time.monotonic() - t0
        if label:
            log.info("%s: got the model lock after waiting %.1f s; starting its work", label, w.waited_s)
    try:
        yield w
    finally:
        _LOCK.release()


def exclusive(fn):
    """Decorator: `fn` runs under the process-wide model lock (`held`, re-entrant)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with held(getattr(fn, "__qualname__", None)):
            return fn(*args, **kwargs)
    return wrapper
