"""Progress of long work (encoding, judging, evaluation): counts, rate and ETA.

    prog = Progress("encode documents", total=len(texts), unit="docs", callback=ctx.progress)
    for chunk in chunks:
        ...
        prog.update(len(chunk))
    prog.close()

- a log line (logger `grouprank.progress`, INFO) at the start, then at most every `every_s` seconds
  (default 30, env GROUPRANK_PROGRESS_EVERY_S) and at the end: "encode documents: 1,024/5,183 docs
  (19.8%), 41.2 docs/s, ETA 1m41s";
- with `heartbeat=True`, the line also when no update came for `every_s` seconds (a background
  thread), so work made of long single steps (a training step, a slow LLM call) is never silent.
  The heartbeat thread runs in a copy of its creator's `contextvars` context, so whatever the
  creator's log records carry (an orchestrator's run context: Prefect's task run) its lines carry
  too; a heartbeat line says how long the current step has run ("step running for 45s");
- a tqdm bar as well, only when stderr is a terminal;
- `callback(done, total)` (the stage context's progress callback: the Prefect progress artifact) at
  most every `callback_every_s` seconds (default 2) and at the end. A `Progress` without a callback
  reports `(label, done, total)` to the sink set by `reporting(sink)` around the work (the flows
  hand the stage's progress artifact in this way, so a training's steps reach it without the
  training code knowing of it).
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
import time
from typing import Callable

log = logging.getLogger("grouprank.progress")

# where `Progress` objects without their own callback report (label, done, total); set by `reporting`
_SINK: contextvars.ContextVar[Callable[[str, int, int], None] | None] = contextvars.ContextVar(
    "grouprank_progress_sink", default=None)


@contextlib.contextmanager
def reporting(sink: Callable[[str, int, int], None] | None):
    """Every `Progress` created inside (in this thread, or a thread started with a copy of its
    context) without a callback of its own reports `sink(label, done, total)`."""
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)


def fmt_duration(s: float) -> str:
    s = int(round(max(s, 0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Progress:
    def __init__(self, label: str, total: int, *, unit: str = "items", callback: Callable[..., None] | None = None,
                 every_s: float | None = None, callback_every_s: float = 2.0, logger: logging.Logger | None = None,
                 bar: bool | None = None, clock: Callable[[], float] = time.monotonic, heartbeat: bool = False,
                 start: int = 0, suffix: Callable[[], str] | None = None, report: bool = True):
        self.label, self.total, self.unit = label, int(total), unit
        sink = _SINK.get() if report and callback is None else None
        if sink is not None:
            callback = lambda done, total: sink(label, done, total)  # noqa: E731
        self.callback, self.callback_every_s = callback, callback_every_s
        self.every_s = float(os.environ.get("GROUPRANK_PROGRESS_EVERY_S", 30.0)) if every_s is None else every_s
        self.log = logger or log
        self.clock = clock
        self.done = self.start = int(start)  # start: work done before this run (a resumed training), not in the rate
        self.suffix = suffix  # extra text for every line (e.g. the last loss)
        self.t0 = self._last_log = self._last_cb = self._last_update = clock()
        self.lines: list[str] = []  # every line logged (for reports and tests)
        self._bar = None
        if (sys.stderr.isatty() if bar is None else bar) and self.total > 0:
            try:
                from tqdm.auto import tqdm
                self._bar = tqdm(total=self.total, desc=label, unit=unit.rstrip("s") or "it", leave=False)
            except ImportError:  # pragma: no cover - tqdm comes with the project's dependencies
                self._bar = None
        self._emit(start=True)
        self._stop = None
        if heartbeat and self.every_s > 0:  # work whose single steps can outlast every_s (a training step)
            import threading
            self._stop = threading.Event()
            # the creator's context: its log records reach where the creator's go (e.g. a Prefect task run)
            ctx = contextvars.copy_context()
            threading.Thread(target=ctx.run, args=(self._beat,), name=f"progress:{label}", daemon=True).start()

    def _beat(self) -> None:
        """Log the current line when nothing was logged for `every_s` (the ETA then comes from the rate so far)."""
        while not self._stop.wait(self.every_s / 2):
            if self.clock() - self._last_log >= self.every_s:
                self._last_log = self.clock()
                self._emit(beat=True)

    def line(self) -> str:
        el = self.clock() - self.t0
        pct = f" ({100.0 * self.done / self.total:.1f}%)" if self.total else ""
        rate = (self.done - self.start) / el if el > 0 else 0.0
        eta = ""
        if 0 < self.done < self.total and rate > 0:
            eta = f", ETA {fmt_duration((self.total - self.done) / rate)}"
        extra = self.suffix() if self.suffix is not None else ""
        return (f"{self.label}: {self.done:,}/{self.total:,} {self.unit}{pct}, {rate:{'.1f' if rate >= 1 else '.2g'}} {self.unit}/s, "
                f"elapsed {fmt_duration(el)}{eta}{extra}")

    def _emit(self, start: bool = False, beat: bool = False) -> None:
        text = f"{self.label}: starting, {self.total:,} {self.unit}" if start else self.line()
        if beat:  # nothing finished for a while: say for how long the current step has run
            text += f", step running for {fmt_duration(self.clock() - self._last_update)}"
        self.lines.append(text)
        self.log.info("%s", text)

    def update(self, n: int = 1) -> None:
        self.done += int(n)
        now = self.clock()
        if n:
            self._last_update = now
        if self._bar is not None:
            self._bar.update(int(n))
        if self.callback is not None and (now - self._last_cb >= self.callback_every_s or self.done >= self.total):
            self._last_cb = now
            try:
                self.callback(self.done, self.total)
            except Exception as e:  # noqa: BLE001 - progress must never break the work
                self.log.debug("progress callback failed: %s", e)
        if now - self._last_log >= self.every_s:
            self._last_log = now
            self._emit()

    def close(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.callback is not None:
            try:
                self.callback(self.done, self.total)
            except Exception:  # noqa: BLE001
                pass
        self._emit()


class LoggingProgress:
    """A stage progress callback (`progress(done, total)` or `progress(part, done, total)`) that also
    logs counts, rate and ETA per part (a `Progress` each), then forwards to `callback` (e.g. the
    Prefect progress artifact's). Hand it to library code in place of the stage context's callback."""

    def __init__(self, label: str, callback: Callable[..., None] | None = None, *, unit: str = "items",
                 every_s: float | None = None, quiet_parts: set[str] | frozenset = frozenset()):
        self.label, self.callback, self.unit, self.every_s = label, callback, unit, every_s
        self.quiet_parts = set(quiet_parts)  # parts that log their own progress: only forwarded
        self.parts: dict[str, Progress] = {}

    def __call__(self, *args) -> None:
        part, done, total = (args if len(args) == 3 else (None, *args))
        key = str(part) if part is not None else ""
        if key in self.quiet_parts:
            self._forward(args)
            return
        p = self.parts.get(key)
        if p is None:
            name = f"{self.label} {key}".strip()
            p = self.parts[key] = Progress(name, int(total), unit=self.unit, every_s=self.every_s, bar=False,
                                           report=False)  # forwarded below, not to the sink
        p.total = int(total)
        p.update(int(done) - p.done)
        if p.done >= p.total and not getattr(p, "_closed", False):
            p._closed = True
            p.close()
        self._forward(args)

    def _forward(self, args) -> None:
        if self.callback is not None:
            try:
                self.callback(*args)
            except Exception as e:  # noqa: BLE001
                log.debug("progress callback failed: %s", e)
