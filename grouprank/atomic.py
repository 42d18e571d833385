"""Atomic files: a reader (a resumed run, another process, a person) sees the old file or the whole
new one, never a half-written one. The one way grouprank writes a report or an export file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    """Call writer(tmp) then rename tmp onto `path` (same folder, so the rename is atomic); the file
    gets the umask's default mode (mkstemp's 0600 would hide a shared export)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(Path(tmp))
        public_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def public_mode(path: str | Path) -> None:
    """Give a file the umask's default mode (exports are meant to be shared)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda t: t.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, obj: Any, *, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """`obj` as JSON (values JSON cannot hold written with str())."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, default=str))
