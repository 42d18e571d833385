"""Content hashes of files and folders, memoised per process by (path, size, mtime): what the
executor records for every stage output and checks before reusing it, and what the index store
records in its manifests."""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

_MEMO: dict[tuple, str] = {}
_LOCK = threading.Lock()


def file_sha256(path: str | os.PathLike) -> str:
    p = Path(path)
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    with _LOCK:
        if key in _MEMO:
            return _MEMO[key]
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    d = h.hexdigest()
    with _LOCK:
        _MEMO[key] = d
    return d


def folder_hashes(root: str | os.PathLike, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """{relative path: sha256} of every file under `root` except those named in `skip`."""
    root = Path(root)
    return {str(f.relative_to(root)): file_sha256(f) for f in sorted(root.rglob("*"))
            if f.is_file() and f.name not in skip and not f.name.endswith(".tmp")}
