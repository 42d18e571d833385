"""Persistent content-addressed answer cache: SQLite in WAL mode.

One row per request hash (see `keys.request_hash`), holding only answers that passed
validation. Each answer is committed as it arrives (one short write transaction), so a process
killed with SIGKILL loses at most the answers it had not yet received; a restarted run finds the
rest and sends only the unanswered prompts. Several processes on one machine may share the file: WAL lets
readers run beside the writer, `busy_timeout` makes writers wait for each other, and
INSERT OR IGNORE makes a duplicate answer harmless.

Lookups are batched (`get_many`) over one long-lived connection. This is the `single_file` mode,
for processes on one machine: SQLite's locks and WAL index do not work across machines on a
network filesystem; a cluster uses the `per_writer` mode (`shared_cache.SegmentCache`).
The cache stores no API keys and no request headers: only the hash, the answer text, token
counts, the answer's token log-probabilities when they were asked for (JSON, `logprobs` column;
added in place to files written before it existed) and a little provenance (model, template
version, tag).
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable, NamedTuple

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    finish_reason TEXT,
    model TEXT,
    template_version TEXT,
    tag TEXT,
    created REAL NOT NULL,
    logprobs TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
"""


class CachedAnswer(NamedTuple):
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    logprobs: list | None = None  # `transport.compact_logprobs` of the answer, when it was asked for


def _load_lp(s: str | None) -> list | None:
    if not s:
        return None
    try:
        v = json.loads(s)
    except ValueError:
        return None
    return v if isinstance(v, list) else None


class KeyedReads:
    """`get` and `get_many` of an answer store: unique keys, read under the store's `_lock` by its
    `_fetch(keys) -> {key: CachedAnswer}` (found keys only)."""

    def get(self, key: str) -> CachedAnswer | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedAnswer]:
        keys = list(dict.fromkeys(keys))
        with self._lock:
            return self._fetch(keys)


class LLMCache(KeyedReads):
    """Thread-safe handle on one cache file (one connection, guarded by a lock)."""

    _CHUNK = 900  # below SQLite's default max host parameters (999)

    def __init__(self, path: str | Path, busy_timeout_s: float = 60.0, *, read_only: bool = False):
        """`read_only`: open an existing file for lookups only (the per_writer mode reads single_file
        caches this way; `put`/`delete` then fail)."""
        self.path = Path(path)
        self._lock = threading.Lock()
        if read_only:
            self._conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                         timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), timeout=busy_timeout_s, isolation_level=None,
                                     check_same_thread=False)
        c = self._conn
        c.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        c.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL: a commit survives a process crash (SIGKILL); only an OS crash / power loss
        # can lose the last commits, which then are simply asked again.
        c.execute("PRAGMA synchronous=NORMAL")
        self._retry_locked(lambda: c.executescript(_SCHEMA))
        self._retry_locked(lambda: c.execute(
            "INSERT OR IGNORE INTO meta(k, v) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)))
        # files written before the logprobs column existed: add it (NULL for their answers)
        cols = {r[1] for r in self._retry_locked(lambda: c.execute("PRAGMA table_info(answers)").fetchall())}
        if "logprobs" not in cols:
            try:
                self._retry_locked(lambda: c.execute("ALTER TABLE answers ADD COLUMN logprobs TEXT"))
            except sqlite3.OperationalError as e:  # another process added it meanwhile
                if "duplicate column" not in str(e).lower():
                    raise

    @staticmethod
    def _retry_locked(fn, tries: int = 50):
        for i in range(tries):
            try:
                return fn()
            except sqlite3.OperationalError as e:  # "database is locked" beyond busy_timeout races
                if "locked" not in str(e) or i == tries - 1:
                    raise
                time.sleep(0.05 * (i + 1))

    def _fetch(self, keys: list[str]) -> dict[str, CachedAnswer]:
        out: dict[str, CachedAnswer] = {}
        cur = self._conn.cursor()
        for i in range(0, len(keys), self._CHUNK):
            chunk = keys[i:i + self._CHUNK]
            q = ("SELECT key, text, prompt_tokens, completion_tokens, finish_reason, logprobs FROM answers "
                 f"WHERE key IN ({','.join('?' * len(chunk))})")
            for k, text, pt, ct, fr, lp in self._retry_locked(lambda: cur.execute(q, chunk).fetchall()):
                out[k] = CachedAnswer(text, pt, ct, fr, _load_lp(lp))
        return out

    def put(self, key: str, text: str, prompt_tokens: int = 0, completion_tokens: int = 0,
            finish_reason: str | None = None, model: str | None = None,
            template_version: str | None = None, tag: str | None = None,
            logprobs: list | None = None) -> None:
        """Store one validated answer and commit it now (autocommit statement)."""
        lp = json.dumps(logprobs, separators=(",", ":")) if logprobs is not None else None
        row = (key, text, int(prompt_tokens or 0), int(completion_tokens or 0), finish_reason, model,
               template_version, tag, time.time(), lp)
        with self._lock:
            self._retry_locked(lambda: self._conn.execute(
                "INSERT OR IGNORE INTO answers(key, text, prompt_tokens, completion_tokens, "
                "finish_reason, model, template_version, tag, created, logprobs) VALUES (?,?,?,?,?,?,?,?,?,?)",
                row))

    def delete(self, key: str) -> None:
        with self._lock:
            self._retry_locked(lambda: self._conn.execute("DELETE FROM answers WHERE key = ?", (key,)))

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def keys(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._conn.execute("SELECT key FROM answers")}

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
