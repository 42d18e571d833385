"""One writer per work dir.

Every run that writes into a work dir (the in-process runner behind `grouprank run` and the stage
commands, and each Prefect flow run in `flows/`) holds `<work_dir>/.grouprank.lock` while it runs:
an OS file lock (`filelock`, flock on POSIX) that the kernel releases when the holder exits or is
killed, plus `<work_dir>/.grouprank.lock.json` naming the holder (pid, host, command, start time).

A second run waits up to `GROUPRANK_LOCK_TIMEOUT_S` seconds (default 0: it does not wait) and then
stops with a `WorkDirLocked` error naming the holder. A lock left by a killed run is not held any
more (the kernel dropped it): the next run takes it over and says whose it was. The lock is
re-entrant within a process (a flow run that calls the runner, nested commands).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from grouprank.atomic import write_json_atomic
from grouprank.errors import UserError

log = logging.getLogger(__name__)

LOCK_NAME = ".grouprank.lock"
HOLDER_NAME = ".grouprank.lock.json"
_HELD: dict[str, list] = {}  # resolved work dir -> [FileLock, depth] held by this process
_GUARD = threading.Lock()


class WorkDirLocked(UserError):
    """Another run holds the work dir."""


def lock_timeout_s() -> float:
    return float(os.environ.get("GROUPRANK_LOCK_TIMEOUT_S", "0") or 0)


def holder(work_dir: str | os.PathLike) -> dict | None:
    """The last holder's record (pid, host, command, started), or None."""
    try:
        return json.loads((Path(work_dir) / HOLDER_NAME).read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(h: dict | None) -> str:
    if not h:
        return "another process (no holder record)"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.get("started", 0)))
    return f"pid {h.get('pid')} on {h.get('host')} (command: {h.get('command')}; since {started})"


def _command_line() -> str:
    """This process's command line, fit to show: credential-like settings and key-shaped values masked."""
    from grouprank.redact import MASK, is_secret_key, redact
    out = []
    for a in [Path(sys.argv[0]).name, *sys.argv[1:]]:
        k, eq, _ = a.partition("=")
        out.append(f"{k}={MASK}" if eq and is_secret_key(k.rsplit(".", 1)[-1]) else redact(a))
    return " ".join(out)[:500]


@contextlib.contextmanager
def work_dir_lock(work_dir: str | os.PathLike, command: str | None = None,
                  timeout_s: float | None = None) -> Iterator[dict]:
    """Hold the work dir's lock for the block; yields this holder's record."""
    from filelock import FileLock, Timeout
    wd = Path(work_dir).expanduser().resolve()
    wd.mkdir(parents=True, exist_ok=True)
    key = str(wd)
    with _GUARD:
        if key in _HELD:
            _HELD[key][1] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield holder(wd) or {}
        finally:
            with _GUARD:
                _HELD[key][1] -= 1
        return
    timeout = lock_timeout_s() if timeout_s is None else timeout_s
    lock = FileLock(str(wd / LOCK_NAME), is_singleton=False)
    waited = False
    try:
        lock.acquire(timeout=0)
    except Timeout:
        h = holder(wd)
        if timeout <= 0:
            raise WorkDirLocked(f"work dir {wd} is in use by {_describe(h)}; wait for it to finish, use another "
                                f"--work-dir, or set GROUPRANK_LOCK_TIMEOUT_S to wait") from None
        log.info("work dir %s is in use by %s: waiting up to %.0f s", wd, _describe(h), timeout)
        waited = True
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise WorkDirLocked(f"work dir {wd} is still in use by {_describe(holder(wd))} after waiting "
                                f"{timeout:.0f} s (GROUPRANK_LOCK_TIMEOUT_S)") from None
    try:
        prev = holder(wd)
        if prev and not waited and prev.get("host") == socket.gethostname() and not _alive(int(prev.get("pid", 0))):
            log.warning("work dir %s: taking over the lock of %s, which is no longer running", wd, _describe(prev))
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command or _command_line(),
              "started": time.time()}
        write_json_atomic(wd / HOLDER_NAME, me, indent=None)
        with _GUARD:
            _HELD[key] = [lock, 1]
        try:
            yield me
        finally:
            with _GUARD:
                _HELD.pop(key, None)
            (wd / HOLDER_NAME).unlink(missing_ok=True)
    finally:
        lock.release()
