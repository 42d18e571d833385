"""Content-addressed index store and resumable, memory-mapped sharded encoding.

Layout under `<work_dir>/indexes/`:

    bm25-<key>/        bm25s index + doc ids + params          key = corpus hash + BM25 params
    emb-<key>/         embeddings.npy (float32 [n, d], memmap)  key = corpus hash + encoder.model_id
                       layout.json, shards/NNNNNN.done, manifest.json (written last = complete)
    faiss-<key>/       index.faiss (HNSW / IVF-PQ only; flat is    key = emb key + index params
                       rebuilt from embeddings.npy, a memcpy)

A directory is complete when its `manifest.json` exists; everything except the embeddings is built
in a temporary sibling directory and renamed into place, so a crash never leaves a half-written
index under a final name. Embeddings are the one artefact written in place, shard by shard, so an
interrupted encode resumes at the first shard without a `.done` marker.

Verified reuse: every manifest records the sha256 of each file of its folder (`files`); a folder
whose files no longer match (a flipped bit, NaN rows written into `embeddings.npy`, a truncated
index) is not complete: `is_complete` removes it so it is built again, and `encode_resumable`
re-encodes. Embeddings must be finite before their manifest is written.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from grouprank.file_hash import folder_hashes

MANIFEST = "manifest.json"
log = logging.getLogger("grouprank.first_stage.store")


def verify_folder(directory: str | os.PathLike) -> str | None:
    """None when the folder's files are those its manifest recorded; else why not."""
    d = Path(directory)
    try:
        recorded = json.loads((d / MANIFEST).read_text()).get("files")
    except (OSError, ValueError) as e:
        return f"unreadable manifest ({e})"
    if not isinstance(recorded, dict) or not recorded:
        return "the manifest records no file hashes (written by an older version)"
    now = folder_hashes(d, skip=(MANIFEST,))
    changed = sorted(k for k in set(recorded) | {k for k in now if not k.startswith("shards/")}
                     if recorded.get(k) != now.get(k))
    return f"file(s) changed since written: {changed}" if changed else None


# --- corpus fingerprints ----------------------------------------------------------------

def corpus_fingerprint(doc_ids: Sequence[str], texts: Sequence[str]) -> str:
    """sha256 over the ordered (doc_id, text) pairs: positions in an index are corpus order, so
    reordering the corpus is a different corpus."""
    h = hashlib.sha256()
    h.update(f"n={len(doc_ids)}\n".encode())
    for d, t in zip(doc_ids, texts):
        h.update(d.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x1e")
    return h.hexdigest()[:32]


def stable_key(*parts: Any) -> str:
    """Short hash of JSON-serialisable parts (order-sensitive, dict keys sorted)."""
    payload = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


# --- the store -----------------------------------------------------------------------------

class IndexStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, kind: str, key: str) -> Path:
        return self.root / f"{kind}-{key}"

    def is_complete(self, kind: str, key: str) -> bool:
        """The folder holds a complete index whose files are the ones its manifest recorded. A
        folder that fails the check is removed (logged), so the caller builds it again."""
        d = self.path(kind, key)
        if not (d / MANIFEST).exists():
            return False
        why = verify_folder(d)
        if why is None:
            return True
        log.warning("not reusing %s: %s; it is rebuilt", d, why)
        shutil.rmtree(d, ignore_errors=True)
        return False

    def manifest(self, kind: str, key: str) -> dict:
        return json.loads((self.path(kind, key) / MANIFEST).read_text())

    @contextmanager
    def building(self, kind: str, key: str, manifest: dict) -> Iterator[Path]:
        """Build into a temporary directory; on success write the manifest and rename it into
        place (a concurrent builder that finished first wins; ours is discarded)."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-{key}.", dir=self.root))
        try:
            yield tmp
            (tmp / MANIFEST).write_text(json.dumps({**manifest, "created": time.time(),
                                                    "files": folder_hashes(tmp, skip=(MANIFEST,))},
                                                   indent=2, default=str))
            final = self.path(kind, key)
            if final.exists() and not (final / MANIFEST).exists():
                shutil.rmtree(final)  # an incomplete leftover (never a complete one)
            try:
                os.replace(tmp, final)
            except OSError:
                if not (final / MANIFEST).exists():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


# --- resumable sharded encoding --------------------------------------------------------------

class ShardedEmbeddings:
    """Embeddings of a corpus in a preallocated float32 `.npy` memmap, filled shard by shard.

    Each shard is an independent unit of work (`encode_shard(i, encode_fn)`): a local loop runs
    them in order, and an orchestrator can map them over workers (Prefect + Dask/Ray task runner)
    because shards write disjoint row ranges and mark themselves done with their own file.
    `finalize()` writes the manifest once every shard is done."""

    def __init__(self, directory: str | os.PathLike, n: int, dim: int, shard_size: int, meta: dict | None = None):
        self.dir = Path(directory)
        self.n, self.dim, self.shard_size = int(n), int(dim), int(shard_size)
        self.meta = dict(meta or {})
        self.n_shards = max(1, -(-self.n // self.shard_size))
        self._mm: np.memmap | None = None

    @property
    def array_path(self) -> Path:
        return self.dir / "embeddings.npy"

    @property
    def complete(self) -> bool:
        return (self.dir / MANIFEST).exists()

    def part_path(self, i: int) -> Path:
        """Where a shard encoded elsewhere (another process or host) leaves its rows: its own file,
        so no two workers ever write one file (a network filesystem would not keep their pages apart)."""
        return self.dir / "parts" / f"{i:06d}.size{self.shard_size}.npy"  # the layout in the name

    def put_part(self, i: int, emb: np.ndarray) -> None:
        """Keep shard i's rows in its own file (atomically); `take_parts` copies them in."""
        lo, hi = self.shard_range(i)
        emb = np.asarray(emb, dtype=np.float32)
        if emb.shape != (hi - lo, self.dim):
            raise ValueError(f"shard {i}: got embeddings of shape {emb.shape}, expected {(hi - lo, self.dim)}")
        path = self.part_path(i)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, emb)
        os.replace(tmp, path)

    def take_parts(self) -> int:
        """Copy the pending shards that were encoded elsewhere into the memmap, in shard order (then
        marked done, their part files removed) -> how many."""
        n = 0
        for i in self.pending():
            part = self.part_path(i)
            if not part.exists():
                continue
            rows = np.load(part)
            if rows.shape != (self.shard_range(i)[1] - self.shard_range(i)[0], self.dim):
                log.warning("%s: %s rows for another layout; the shard is encoded again", part, rows.shape)
            else:
                self.put_shard(i, rows)
                n += 1
            part.unlink()
        return n

    def _marker(self, i: int) -> Path:
        return self.dir / "shards" / f"{i:06d}.done"

    def _layout_ok(self, layout: dict) -> bool:
        lpath = self.dir / "layout.json"
        try:
            return json.loads(lpath.read_text()) == layout and self.array_path.exists()
        except (OSError, json.JSONDecodeError):
            return False

    def open(self, wait_s: float = 120.0) -> "ShardedEmbeddings":
        """Create or reopen the memmap. A layout change (size, dim, shard size) restarts.
        Safe for several worker processes opening at once: one creates (under an O_EXCL lock
        file), the others wait for its layout.json and reopen."""
        layout = {"n": self.n, "dim": self.dim, "shard_size": self.shard_size, "dtype": "float32"}
        (self.dir / "shards").mkdir(parents=True, exist_ok=True)
        lock = self.dir / ".create.lock"
        deadline = time.time() + wait_s
        while True:
            if self._layout_ok(layout):
                self._mm = np.lib.format.open_memmap(self.array_path, mode="r+")
                return self
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if time.time() > deadline:  # a creator died holding the lock
                    lock.unlink(missing_ok=True)
                    deadline = time.time() + wait_s
                time.sleep(0.2)
                continue
            try:
                if self._layout_ok(layout):
                    continue
                for p in (self.dir / "shards").glob("*.done"):
                    p.unlink()
                (self.dir / MANIFEST).unlink(missing_ok=True)
                (self.dir / "layout.json").unlink(missing_ok=True)
                self._mm = np.lib.format.open_memmap(self.array_path, mode="w+", dtype=np.float32,
                                                     shape=(self.n, self.dim))
                (self.dir / "layout.json").write_text(json.dumps(layout))
                return self
            finally:
                os.close(fd)
                lock.unlink(missing_ok=True)

    def shard_range(self, i: int) -> tuple[int, int]:
        return i * self.shard_size, min(self.n, (i + 1) * self.shard_size)

    def pending(self) -> list[int]:
        return [i for i in range(self.n_shards) if not self.shard_done(i)]

    def shard_done(self, i: int) -> bool:
        return self._marker(i).exists()

    def encode_shard(self, i: int, texts: Sequence[str], encode_fn: Callable[[list[str]], np.ndarray]) -> None:
        lo, hi = self.shard_range(i)
        self.put_shard(i, encode_fn(list(texts[lo:hi])) if hi > lo else np.zeros((0, self.dim), np.float32))

    def put_shard(self, i: int, emb: np.ndarray) -> None:
        """Write shard i's rows, flush, then mark it done (a crash before the marker = redo)."""
        lo, hi = self.shard_range(i)
        emb = np.asarray(emb, dtype=np.float32)
        if emb.shape != (hi - lo, self.dim):
            raise ValueError(f"shard {i}: got embeddings of shape {emb.shape}, expected {(hi - lo, self.dim)}")
        if hi > lo:
            assert self._mm is not None, "call open() first"
            self._mm[lo:hi] = emb
            self._mm.flush()
        self._marker(i).write_text("")

    def finalize(self) -> np.ndarray:
        missing = self.pending()
        if missing:
            raise RuntimeError(f"{len(missing)} shard(s) not encoded yet: {missing[:5]}")
        if self._mm is not None:
            self._mm.flush()
            self._mm = None
        bad = self.nonfinite_shards()
        if bad:
            raise ValueError(f"{self.array_path}: non-finite embeddings in shard(s) {bad[:5]} (the encoder "
                             "returned NaN or inf)")
        shutil.rmtree(self.dir / "parts", ignore_errors=True)  # parts of another layout, never taken
        (self.dir / MANIFEST).write_text(json.dumps({**self.meta, "n": self.n, "dim": self.dim,
                                                     "shard_size": self.shard_size, "created": time.time(),
                                                     "files": {k: v for k, v in folder_hashes(
                                                         self.dir, skip=(MANIFEST,)).items()
                                                         if not k.startswith("shards/")}},
                                                    indent=2, default=str))
        return self.load(self.dir)

    def nonfinite_shards(self) -> list[int]:
        """Shards holding a NaN or inf value."""
        arr = np.load(self.array_path, mmap_mode="r")
        out = []
        for i in range(self.n_shards):
            lo, hi = self.shard_range(i)
            if hi > lo and not np.isfinite(arr[lo:hi]).all():
                out.append(i)
        return out

    def redo(self, shards: Sequence[int]) -> None:
        """Mark shards as not encoded (their rows are encoded again) and the folder incomplete."""
        (self.dir / MANIFEST).unlink(missing_ok=True)
        for i in shards:
            self._marker(i).unlink(missing_ok=True)

    @staticmethod
    def load(directory: str | os.PathLike) -> np.ndarray:
        """Read-only memmap of completed embeddings."""
        return np.load(Path(directory) / "embeddings.npy", mmap_mode="r")


def encode_resumable(directory: str | os.PathLike, texts: Sequence[str], encode_fn: Callable[[list[str]], np.ndarray],
                     dim: int, shard_size: int, meta: dict | None = None,
                     progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Encode `texts` into `<directory>/embeddings.npy`, resuming completed shards; returns a
    read-only memmap. `progress(n_done_texts)` is called after each shard."""
    se = ShardedEmbeddings(directory, len(texts), dim, shard_size, meta)
    if se.complete and se.array_path.exists():
        why = verify_folder(se.dir)
        if why is None:
            arr = se.load(directory)
            if arr.shape == (len(texts), dim):
                return arr
        else:  # never reuse what is not what was written: encode everything again
            log.warning("not reusing the embeddings in %s: %s; encoding again", se.dir, why)
            se.redo(range(se.n_shards))
    se.open()
    se.take_parts()  # shards a shard plan's workers encoded (grouprank.first_stage.sharding)
    for attempt in range(2):
        for i in se.pending():
            se.encode_shard(i, texts, encode_fn)
            if progress:
                lo, hi = se.shard_range(i)
                progress(hi - lo)
        bad = se.nonfinite_shards() if attempt == 0 else []
        if not bad:
            break
        log.warning("%s: non-finite values in shard(s) %s (an interrupted or damaged write): encoding them again",
                    se.array_path, bad[:5])
        se.redo(bad)
    return se.finalize()
