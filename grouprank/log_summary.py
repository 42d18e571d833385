"""Repeated warnings summarised per stage: the first few of a kind are shown, the rest counted.

A weak LLM fails the answer format on most pairs; one WARNING per failed answer buries everything
else in the console and the run logs. Inside `summarised_warnings(scope)` a WARNING of the library
(`grouprank.*` loggers) whose message template (`record.msg`, before its arguments are filled in)
was already shown `keep` times is not shown again; on leaving, one line per template says how many
were held back:

    stage judge: 36 more warning(s) like 'LLM request %s failed (%s): %s' not shown (the first 3 of that kind were)

The filter sits on the handlers of the root and `grouprank` loggers (a logger's own filters do
not see its children's records), so every destination (console, the Prefect run logs) gets the
same lines. Errors and other levels always pass. Nested scopes and concurrent stages share the
counts of the outermost scope that is still open.
"""
from __future__ import annotations

import contextlib
import logging
import threading

log = logging.getLogger("grouprank.log_summary")

KEEP = 3  # warnings of one kind shown per scope


class _Repeats(logging.Filter):
    def __init__(self, keep: int):
        super().__init__()
        self.keep = keep
        self.counts: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING or not record.name.startswith("grouprank"):
            return True
        decided = getattr(record, "_grouprank_repeat_shown", None)
        if decided is None:  # the first handler to see the record decides for every handler
            key = (record.name, str(record.msg))
            with self.lock:
                n = self.counts[key] = self.counts.get(key, 0) + 1
            decided = n <= self.keep
            record._grouprank_repeat_shown = decided
        return decided

    def held_back(self) -> dict[tuple[str, str], int]:
        with self.lock:
            return {k: n - self.keep for k, n in self.counts.items() if n > self.keep}


_FILTER: _Repeats | None = None
_OPEN = 0  # scopes open (stages running side by side share one filter and its counts)
_STATE_LOCK = threading.Lock()


def _handlers() -> list[logging.Handler]:
    hs = list(logging.getLogger().handlers) + list(logging.getLogger("grouprank").handlers)
    return list({id(h): h for h in hs}.values())


@contextlib.contextmanager
def summarised_warnings(scope: str, keep: int = KEEP):
    """Within the block, show at most `keep` library warnings per message template; then one summary
    line per template held back during the block (`scope` names the stage in that line)."""
    global _FILTER, _OPEN
    with _STATE_LOCK:
        if _FILTER is None:
            _FILTER = _Repeats(keep)
            _FILTER.handlers = _handlers()
            for h in _FILTER.handlers:
                h.addFilter(_FILTER)
        f = _FILTER
        _OPEN += 1
        before = f.held_back()
    try:
        yield f
    finally:
        after = f.held_back()
        with _STATE_LOCK:
            _OPEN -= 1
            if _OPEN == 0:
                for h in f.handlers:
                    h.removeFilter(f)
                _FILTER = None
        for (_, msg), n in sorted(after.items()):
            n -= before.get((_, msg), 0)
            if n > 0:
                log.warning("%s: %d more warning(s) like %r not shown (the first %d of that kind were)",
                            scope, n, msg, f.keep)
