"""Collections: the built-in test collections and the formats users bring."""
from __future__ import annotations

from pathlib import Path

from grouprank.errors import UserError

from .base import DEFAULT_MAX_DOC_CHARS, Collection
from .builtin import BUILTIN, LOADERS
from .formats import load_beir, load_bright, load_hf_disk, load_tabular
from .trec import read_trec_qrels, read_trec_run, run_table, write_trec_qrels, write_trec_run

__all__ = ["Collection", "BUILTIN", "load_collection", "load_beir", "load_bright", "load_hf_disk", "load_tabular",
           "read_trec_qrels", "read_trec_run", "run_table", "write_trec_qrels", "write_trec_run"]


def load_collection(name: str, *, format: str = "builtin", path: str | None = None, data_root: str | Path | None = None,
                    quarantine: bool = False, max_chars: int = DEFAULT_MAX_DOC_CHARS, **kwargs) -> Collection:
    """Load a collection. `format="builtin"` reads one of BUILTIN from the data root
    (default ../shared/data beside the repository; GROUPRANK_DATA_ROOT overrides)."""
    from grouprank.paths import default_data_root
    q: list | None = [] if quarantine else None
    if format == "builtin":
        if name not in LOADERS:
            raise UserError(f"unknown collection {name!r}; built-in: {', '.join(BUILTIN)} "
                            f"(or your files: --format beir|bright|trec|jsonl|csv|parquet|hf --path PATH, "
                            f"or data.format / data.path in the config)")
        return LOADERS[name](Path(data_root) if data_root else default_data_root(), q, max_chars)
    src = path or name
    if format == "beir":
        return load_beir(src, name=kwargs.get("collection_name"), quarantine=q, max_chars=max_chars)
    if format == "bright":
        return load_bright(src, name=kwargs.get("collection_name"), quarantine=q, max_chars=max_chars)
    if format == "trec" or (format in ("jsonl", "csv", "parquet", "tsv") and Path(src).is_dir()):
        from .formats import load_folder  # corpus + queries files and TREC qrels in one folder
        return load_folder(src, name=kwargs.get("collection_name"), quarantine=q, max_chars=max_chars)
    kwargs.pop("collection_name", None)
    if format in ("jsonl", "csv", "parquet", "tsv"):
        return load_tabular(src, quarantine=q, max_chars=max_chars, **kwargs)
    if format == "hf":
        return load_hf_disk(src, quarantine=q, max_chars=max_chars, **kwargs)
    raise UserError(f"unknown collection format {format!r}")


def load_from_config(cfg) -> Collection:
    d = cfg.data
    return load_collection(d.collection, format=d.format, path=d.path, data_root=cfg.data_root(),
                           quarantine=d.quarantine)


def source_files(cfg) -> dict[str, str]:
    """The files the configured collection is read from (a built-in collection's folder under the
    data root, or `data.path`): the `load` stage's cache key hashes them."""
    d = cfg.data
    if d.format == "builtin":
        return {"collection_files": str(cfg.data_root() / d.collection)}
    return {"collection_files": str(Path(d.path or d.collection).expanduser().resolve())}


def excluded_files(cfg) -> dict[str, str]:
    """The file BRIGHT's excluded ids come from (none for other formats): the key of every stage that
    filters runs with them hashes it."""
    from .formats import _find
    d = cfg.data
    if d.format != "bright":
        return {}
    try:
        return {"excluded_ids": str(_find(Path(d.path or d.collection), "examples"))}
    except Exception:  # the stage itself reports the missing file, naming it
        return {"excluded_ids": str(Path(d.path or d.collection))}


def excluded_from_config(cfg) -> dict[str, set[str]]:
    """The configured collection's excluded ids per query (BRIGHT's `excluded_ids`; {} for other
    formats). Every run is filtered with them before it is written or scored."""
    from .formats import read_bright_excluded
    d = cfg.data
    if d.format != "bright":
        return {}
    return read_bright_excluded(d.path or d.collection)
