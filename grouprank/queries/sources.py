"""Mining existing queries: from a loaded collection's splits, from query files (JSONL / CSV /
TSV / Parquet) and from Hugging Face datasets saved on disk, always with a column mapping.

Every function returns QUERIES records (dicts) with provenance: source="existing", the split
label, the collection/source name, decision="kept" (filters decide later). Bad input records
go through the collections' record sinks: an `InputError` naming file, record and field, or a
quarantine row when a quarantine list is passed.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from grouprank.errors import InputError, UserError


def _existing(qid: str, text: str, collection: str, split: str) -> dict:
    from grouprank.collections.base import existing_query
    return existing_query(qid, text, collection, split)


def from_table(queries: pa.Table, splits: Sequence[str] | None = None, *,
               collection: str | None = None) -> list[dict]:
    """Existing queries of the given splits (None: all) of a QUERIES-like table, as QUERIES
    records with decision reset to "kept". Unknown splits are an error naming the splits there are."""
    if splits is not None:
        have = sorted(set(queries.column("split").to_pylist()))
        missing = [s for s in splits if s not in have]
        if missing:
            raise UserError(f"query split(s) {missing} not in the collection (it has {have})")
        queries = queries.filter(pc.is_in(queries["split"], pa.array(list(splits), pa.string())))
    out = []
    cols = set(queries.column_names)
    for r in queries.to_pylist():
        rec = _existing(str(r["query_id"]), r["text"], collection or r.get("collection") or "", r.get("split") or "")
        if "source" in cols and r.get("source") == "generated":  # re-mining an earlier output: keep provenance
            for k in ("source", "source_doc_id", "generator_model", "template_version", "query_type",
                      "roundtrip_rank"):
                rec[k] = r.get(k)
        out.append(rec)
    return out


AUTO = "auto"
UNJUDGED = "unjudged"  # the split BEIR gives a query found in no qrels file


def query_splits(queries: pa.Table | None) -> list[str]:
    """The splits a collection's queries have (without BEIR's `unjudged`)."""
    if queries is None or "split" not in queries.column_names:
        return []
    return sorted({str(s) for s in queries.column("split").to_pylist() if s and s != UNJUDGED})


def default_split(have: Sequence[str], purpose: str) -> list[str] | None:
    """The default query split(s) for `purpose`, chosen from the splits the collection has:
    "mine" (the queries the pipeline trains on): ["train"] when there is one, else every judged
    split (a collection without a train/test split: all judged queries);
    "guard" (the leakage guard's evaluation set): ["test"] when there is a train split to keep apart
    from it, else [] (the mined queries are the collection's only queries);
    "evaluate": ["test"] when there is one, else None (all judged queries)."""
    have = list(have)
    if purpose == "mine":
        return ["train"] if "train" in have else have
    if purpose == "guard":
        return ["test"] if "train" in have and "test" in have else []
    if purpose == "evaluate":
        return ["test"] if "test" in have else None
    raise ValueError(f"unknown purpose {purpose!r}")


def auto_holdout_applies(requested: Sequence[str] | None, have: Sequence[str]) -> bool:
    """True when "auto" mining meets a collection without a train split (Cranfield, CISI, NPL, a BEIR
    folder with only test): its judged queries are then both the training source and the evaluation
    set, so a seeded share of them is held out of mining for evaluation (`holdout_ids`)."""
    return bool(requested) and AUTO in requested and "train" not in have and bool(have)


def holdout_ids(query_ids: Iterable[str], fraction: float, seed: int) -> set[str]:
    """A seeded, stable share (`fraction`) of `query_ids`: by a hash of (seed, id), so the same query
    stays held out when the collection grows or the order changes."""
    import hashlib
    if fraction <= 0:
        return set()
    def h(q: str) -> float:
        return int.from_bytes(hashlib.sha256(f"{seed}:{q}".encode()).digest()[:8], "big") / 2 ** 64
    return {str(q) for q in query_ids if h(str(q)) < fraction}


def resolve_splits(requested: Sequence[str] | None, have: Sequence[str], purpose: str) -> list[str] | None:
    """`requested` with "auto" replaced by `default_split(have, purpose)`."""
    if requested is None:
        return None
    if AUTO not in requested:
        return list(requested)
    auto = default_split(have, purpose)
    if auto is None:
        return None
    out: list[str] = []
    for s in requested:
        for x in (auto if s == AUTO else [s]):
            if x not in out:
                out.append(x)
    return out


def from_collection(collection, splits: Sequence[str] | None = (AUTO,)) -> list[dict]:
    """Existing queries of `splits` of a `grouprank.collections.Collection` ("auto": train when the
    collection has it, else all judged queries)."""
    splits = resolve_splits(splits, query_splits(collection.queries), "mine")
    return from_table(collection.queries, splits, collection=collection.name)


def _source_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path.is_dir():
        return "hf"
    suf = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    return {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv",
            ".parquet": "parquet"}.get(suf, suf.lstrip(".") or "?")


def _iter_hf(path: Path, hf_split: str | None) -> Iterable[tuple[str, Mapping[str, Any]]]:
    import datasets
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001 - datasets raises several types
        raise InputError(str(path), None, None, f"not a dataset saved with save_to_disk ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if hf_split is None:
            if len(ds) != 1:
                raise InputError(str(path), None, None, f"DatasetDict with splits {list(ds)}: say which "
                                 "one with hf_split")
            hf_split = next(iter(ds))
        if hf_split not in ds:
            raise InputError(str(path), None, None, f"no split {hf_split!r} (have {list(ds)})")
        ds = ds[hf_split]
    for i, rec in enumerate(ds, start=1):
        yield f"record {i}", rec


def from_file(path: str | Path, *, id_column: str = "query_id", text_column: str = "text",
              split: str = "train", format: str = "auto", hf_split: str | None = None,
              id_prefix: str = "", name: str | None = None,
              quarantine: list | None = None) -> list[dict]:
    """Existing queries from a JSONL / CSV / TSV / Parquet file or a HF dataset directory.

    `id_column` / `text_column` map the file's columns; numeric ids become strings ("12", not
    "12.0"). A record without id or text, with non-text text, or a duplicate id is an
    `InputError` (file, record, field) or, with `quarantine`, a quarantine row."""
    from grouprank.collections.base import RecordSink
    from grouprank.collections.formats import _MISSING, _bad, _get, iter_records
    from data_schemas import QUERIES

    path = Path(path)
    if not path.exists():
        raise InputError(str(path), None, None, "file not found")
    fmt = _source_format(path, format)
    name = name or (path.name if path.is_dir() else path.name.split(".")[0])
    if fmt == "hf":
        records = _iter_hf(path, hf_split)
    elif fmt in ("jsonl", "csv", "tsv", "parquet"):
        records = iter_records(path, quarantine)
    else:
        raise InputError(str(path), None, None, f"unsupported query file type {fmt!r} "
                         "(jsonl, csv, tsv, parquet, or a HF dataset directory)")
    sink = RecordSink(QUERIES, quarantine, unique="query_id", text_fields=("text",))
    for where, rec in records:
        qid = _get(rec, id_column, path, where, quarantine, id_like=True)
        text = _get(rec, text_column, path, where, quarantine)
        if qid is _MISSING or text is _MISSING:
            continue
        if qid is None or (isinstance(qid, str) and not qid.strip()):
            _bad(quarantine, path, where, id_column, "empty query id", rec)
            continue
        if text is not None and not isinstance(text, str):
            _bad(quarantine, path, where, text_column, f"expected text, got {type(text).__name__}", rec)
            continue
        sink.add(_existing(f"{id_prefix}{str(qid).strip()}", (text or "").strip(), name, split),
                 str(path), where, rec)
    return sink.records


def from_source(src, quarantine: list | None = None) -> list[dict]:
    """`from_file` for a `grouprank.config.QuerySource`."""
    return from_file(src.path, id_column=src.id_column, text_column=src.text_column, split=src.split,
                     format=src.format, hf_split=src.hf_split, id_prefix=src.id_prefix, name=src.name,
                     quarantine=quarantine)


def cap(records: list[dict], max_queries: int | None, seed: int) -> list[dict]:
    """At most `max_queries` records: a seeded sample, in input order."""
    if max_queries is None or len(records) <= max_queries:
        return records
    keep = set(random.Random(seed).sample(range(len(records)), max_queries))
    return [r for i, r in enumerate(records) if i in keep]


def check_unique_ids(records: Sequence[dict]) -> None:
    """Query ids must be unique over all sources: name both sources of a clash."""
    seen: dict[str, dict] = {}
    for r in records:
        q = r["query_id"]
        if q in seen:
            a, b = seen[q], r
            raise UserError(f"query id {q!r} appears twice (sources {a['collection']}/{a['split']} and "
                            f"{b['collection']}/{b['split']}); give one source an id_prefix")
        seen[q] = r
