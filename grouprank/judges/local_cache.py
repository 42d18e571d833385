"""Persistent document-embedding cache of the local judge (`LocalScorer(embed_cache=...)` or
GROUPRANK_LOCAL_EMBED_CACHE): SQLite in WAL mode, key = model tag | sha1(text), value = float32
vector. Lets the bench, the pipeline (<work_dir>/local_judge_embeddings.sqlite) and the test
server's responder share embeddings across processes. In the pipeline it only serves what the
retrieval's stored embeddings do not (a judge fed without the retrieve stage's `indexes`, a judge
encoder other than the retrieval's, the e5 feature)."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np


class VectorCache:
    """Persistent document-embedding cache (SQLite, WAL): key = model tag | sha1(text). Lets the
    bench, the pipeline and the local server's responder share embeddings across processes."""

    def __init__(self, path):
        import sqlite3
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._c = sqlite3.connect(str(path), timeout=60, isolation_level=None, check_same_thread=False)
        self._c.execute("PRAGMA journal_mode=WAL")
        self._c.execute("CREATE TABLE IF NOT EXISTS vecs (key TEXT PRIMARY KEY, vec BLOB NOT NULL) WITHOUT ROWID")

    def get_many(self, keys: list[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        with self._lock:
            for i in range(0, len(keys), 900):
                chunk = keys[i:i + 900]
                q = f"SELECT key, vec FROM vecs WHERE key IN ({','.join('?' * len(chunk))})"
                for k, b in self._c.execute(q, chunk):
                    out[k] = np.frombuffer(b, dtype=np.float32).copy()
        return out

    def put_many(self, items: list[tuple[str, np.ndarray]]) -> None:
        with self._lock:
            self._c.execute("BEGIN")
            self._c.executemany("INSERT OR IGNORE INTO vecs VALUES (?, ?)",
                                [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items])
            self._c.execute("COMMIT")
