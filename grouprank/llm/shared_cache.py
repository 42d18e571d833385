"""The answer cache a cluster can share (`llm.cache_mode: per_writer`): one file per writer process.

SQLite must not be written by processes on several machines through a network filesystem (its
locks and WAL index are not shared there), so in this mode every process appends the answers it
receives to its own file in the cache folder, `<host>-<pid>-<random>.jsonl` (one per process, shared
by its clients), created on its first answer and written by no one else; lookups read every writer's file as one cache. A line is one
answer, written with a single append and complete only with its newline: a reader skips a line
still being written (it is read at the next lookup), and a writer killed with SIGKILL loses at most
the answer it was writing. Lookups that miss re-read what the other writers appended since, so
concurrent processes also see each other's answers, and a rerun finds everything any of them
stored. SQLite files of the single_file mode are read too (never written): any `*.sqlite` in the
folder and the one of the same name beside it (`llm_cache.sqlite` beside `llm_cache.d`).

Line format (UTF-8 JSON, the key first so that indexing a file needs no JSON parse):
    {"k": <request hash>, "t": text, "p": prompt tokens, "c": completion tokens, "f": finish_reason,
     "lp": logprobs or null, "m": model, "v": template_version, "g": tag, "at": unix time}
    {"d": <request hash>}     the writer deleted that answer (`delete`)
Each process keeps the raw lines of the folder in memory (about a line's size per answer) and
parses a line when it is looked up. The first answer stored for a key wins, as in SQLite's
INSERT OR IGNORE.
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from pathlib import Path

from .cache import CachedAnswer, KeyedReads, LLMCache

log = logging.getLogger("grouprank.llm")

_PUT = b'{"k":"'
_DEL = b'{"d":"'
_KEY_LEN = 64  # sha256 hex


_NAMES: dict[int, str] = {}
_WRITERS: dict[tuple[int, str], "_Writer"] = {}
_WRITERS_LOCK = threading.Lock()


def writer_name() -> str:
    """`<host>-<pid>-<random>`: unique to this process (pids repeat across machines and over time);
    one per process (a forked child gets its own)."""
    pid = os.getpid()
    name = _NAMES.get(pid)
    if name is None:
        host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:64] or "host"
        name = _NAMES[pid] = f"{host}-{pid}-{secrets.token_hex(4)}"
    return name


class _Writer:
    """This process's file in one cache folder, shared by its caches (every client of the process):
    one descriptor, one lock, so the process has one file per folder and its lines never interleave."""

    def __init__(self, path: Path):
        self.path, self.lock, self.fd, self.users = path, threading.Lock(), None, 0
        self.pid = os.getpid()

    def append(self, line: bytes) -> None:
        with self.lock:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            view = memoryview(line)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]

    def release(self) -> None:
        with _WRITERS_LOCK:
            self.users -= 1
            if self.users > 0:
                return
            _WRITERS.pop((os.getpid(), str(self.path)), None)
        with self.lock:
            if self.fd is not None:
                try:
                    os.fsync(self.fd)
                finally:
                    os.close(self.fd)
                    self.fd = None


def _writer(folder: Path) -> _Writer:
    path = folder / f"{writer_name()}.jsonl"
    with _WRITERS_LOCK:
        w = _WRITERS.get((os.getpid(), str(path)))
        if w is None:
            w = _WRITERS[(os.getpid(), str(path))] = _Writer(path)
        w.users += 1
        return w


class _Index:
    """What this process has read of one cache folder, shared by all its caches of that folder (one
    per judge client, per shard): each file is read once per process, then only what was appended."""

    def __init__(self):
        self.lock = threading.Lock()
        self.lines: dict[str, bytes] = {}
        self.deleted: dict[str, str] = {}  # key -> the file whose writer deleted it
        self.read: dict[str, list[int]] = {}  # file name -> [bytes indexed, lines indexed]
        self.sqlite: dict[Path, LLMCache] = {}
        self.users = 0


_INDEXES: dict[tuple[int, str], _Index] = {}


def _index(folder: Path) -> _Index:
    with _WRITERS_LOCK:
        ix = _INDEXES.get((os.getpid(), str(folder)))
        if ix is None:
            ix = _INDEXES[(os.getpid(), str(folder))] = _Index()
        ix.users += 1
        return ix


class SegmentCache(KeyedReads):
    """The per-writer cache folder as one `LLMCache`-like cache (get, get_many, put, delete, keys, len)."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder)
        self.path.mkdir(parents=True, exist_ok=True)
        self._writer: _Writer | None = _writer(self.path)
        self.own = self._writer.path
        self._ix = _index(self.path)
        self._lock = self._ix.lock  # the shared index's: every cache of this folder in the process
        self._lines, self._deleted, self._read, self._sqlite = (self._ix.lines, self._ix.deleted, self._ix.read,
                                                                self._ix.sqlite)
        with self._lock:
            self._refresh()

    # ------------------------------------------------------------------ reading
    def _refresh(self) -> None:
        """Index what the other writers appended since the last look (and SQLite files that appeared)."""
        beside = self.path.with_suffix(".sqlite")
        found = [beside] if beside != self.path and beside.is_file() else []
        try:
            entries = list(os.scandir(self.path))
        except FileNotFoundError:
            entries = []
        for e in entries:
            if e.name.endswith(".sqlite") and e.is_file():
                found.append(Path(e.path))
            elif e.name.endswith(".jsonl"):  # this process's own file too: its other caches write there
                self._index_file(e)
        for p in found:
            if p not in self._sqlite:
                self._sqlite[p] = LLMCache(p, read_only=True)

    def _index_file(self, entry: os.DirEntry) -> None:
        seen = self._read.setdefault(entry.name, [0, 0])
        try:
            size = entry.stat().st_size
            if size <= seen[0]:
                return
            with open(entry.path, "rb") as f:
                f.seek(seen[0])
                data = f.read(size - seen[0])
        except OSError as e:
            log.warning("LLM cache: cannot read %s (%s); its answers are not used this time", entry.path, e)
            return
        end = data.rfind(b"\n")
        if end < 0:
            return  # a line still being written
        seen[0] += end + 1
        lines, deleted = self._lines, self._deleted
        for line in data[:end].split(b"\n"):
            seen[1] += 1
            head, key = line[:6], line[6:6 + _KEY_LEN].decode("ascii", "replace")
            if head == _PUT and line[6 + _KEY_LEN:8 + _KEY_LEN] == b'",':
                if deleted.get(key) == entry.name:  # stored again by the writer that deleted it
                    del deleted[key]
                if key not in lines and key not in deleted:
                    lines[key] = line
            elif head == _DEL and line[6 + _KEY_LEN:] == b'"}':
                lines.pop(key, None)
                deleted[key] = entry.name
            else:
                log.warning("LLM cache: %s line %d is not a cache line; skipped", entry.path, seen[1])

    def _parse(self, key: str, line: bytes) -> CachedAnswer | None:
        try:
            r = json.loads(line)
            lp = r.get("lp")
            return CachedAnswer(r["t"], int(r.get("p") or 0), int(r.get("c") or 0), r.get("f"),
                                lp if isinstance(lp, list) else None)
        except (ValueError, KeyError, TypeError) as e:
            log.warning("LLM cache: the answer %s in %s is unreadable (%s); asked again", key[:12], self.path, e)
            return None

    def _lookup(self, keys: list[str], out: dict[str, CachedAnswer]) -> None:
        lines = self._lines
        for k in keys:
            line = lines.get(k)
            if line is not None and k not in out:
                hit = self._parse(k, line)
                if hit is not None:
                    out[k] = hit

    def _fetch(self, keys: list[str]) -> dict[str, CachedAnswer]:
        out: dict[str, CachedAnswer] = {}
        self._lookup(keys, out)
        if len(out) < len(keys):
            self._refresh()
            self._lookup(keys, out)
        for db in self._sqlite.values():
            missing = [k for k in keys if k not in out and k not in self._deleted]
            if not missing:
                break
            out.update(db.get_many(missing))
        return out

    # ------------------------------------------------------------------ writing (own file only)
    def _append(self, line: bytes) -> None:
        if self._writer is None:
            raise ValueError(f"LLM cache {self.path} is closed")
        if self._writer.pid != os.getpid():  # a forked child: its own file, never its parent's
            self._writer = _writer(self.path)
            self.own = self._writer.path
        self._writer.append(line)

    def put(self, key: str, text: str, prompt_tokens: int = 0, completion_tokens: int = 0,
            finish_reason: str | None = None, model: str | None = None,
            template_version: str | None = None, tag: str | None = None,
            logprobs: list | None = None) -> None:
        """Append one validated answer to this process's file (kept when the key is already stored)."""
        if len(key) != _KEY_LEN or not key.isalnum():
            raise ValueError(f"LLM cache key must be a sha256 hex digest, got {len(key)} characters")
        rec = {"k": key, "t": text, "p": int(prompt_tokens or 0), "c": int(completion_tokens or 0),
               "f": finish_reason, "lp": logprobs, "m": model, "v": template_version, "g": tag,
               "at": round(time.time(), 3)}
        line = json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
        with self._lock:
            if key in self._lines:
                return
            self._append(line + b"\n")
            self._lines[key] = line
            self._deleted.pop(key, None)

    def delete(self, key: str) -> None:
        with self._lock:
            self._append(_DEL + key.encode("ascii") + b'"}\n')
            self._lines.pop(key, None)
            self._deleted[key] = self.own.name

    def keys(self) -> set[str]:
        with self._lock:
            self._refresh()
            out = set(self._lines)
            for db in self._sqlite.values():
                out |= db.keys() - self._deleted.keys()
            return out

    def __len__(self) -> int:
        return len(self.keys())

    def close(self) -> None:
        with self._lock:
            if self._writer is None:
                return
            if self._writer.pid == os.getpid():
                self._writer.release()
            self._writer = None
        with _WRITERS_LOCK:  # the last cache of this folder in the process closes the shared index
            self._ix.users -= 1
            last = self._ix.users <= 0
            if last and _INDEXES.get((os.getpid(), str(self.path))) is self._ix:
                del _INDEXES[(os.getpid(), str(self.path))]
        if last:
            with self._lock:
                for db in self._sqlite.values():
                    db.close()
                self._sqlite.clear()


def open_cache(path: str | Path, mode: str | None = None):
    """The answer cache at `path`: "per_writer" (a folder, `SegmentCache`) or "single_file" (SQLite,
    `LLMCache`); None: per_writer when `path` is an existing folder, else single_file."""
    path = Path(path)
    if mode is None:
        mode = "per_writer" if path.is_dir() else "single_file"
    if mode == "per_writer":
        return SegmentCache(path)
    if mode != "single_file":
        raise ValueError(f"unknown LLM cache mode {mode!r} (single_file or per_writer)")
    return LLMCache(path)
