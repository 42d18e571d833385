"""Loaders for formats users bring: BEIR folders, BRIGHT files (TREC qrels/run files: `trec`),
JSONL/CSV/Parquet tables with a column mapping, and Hugging Face datasets saved on disk.

All go through the same record sinks as the built-in collections, so bad input gets the same
treatment: an `InputError` naming file, line/record and field, or a quarantine row.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Iterator, Mapping

import pyarrow as pa

from grouprank.errors import InputError

from .base import (DEFAULT_MAX_DOC_CHARS, Collection, bad_record as _bad, build_qrels, check_qrels_refs, decode_lines,
                   existing_query, make_sinks, no_records, qrel, quarantine_table, strict_int)
from .trec import read_trec_qrels


# --- generic record readers: (where, record dict) ------------------------------------------

def iter_jsonl(path: Path, quarantine: list | None) -> Iterator[tuple[str, Any]]:
    for no, line in decode_lines(Path(path).read_bytes(), str(path), quarantine):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            _bad(quarantine, path, f"line {no}", None, f"malformed JSON ({e.msg} at column {e.colno})", line)
            continue
        except RecursionError:
            _bad(quarantine, path, f"line {no}", None, "JSON nested too deeply to read (a record is a flat object)",
                 line[:200])
            continue
        if not isinstance(obj, dict):
            _bad(quarantine, path, f"line {no}", None, f"expected a JSON object, got {type(obj).__name__}", line)
            continue
        field = _surrogate_field(obj)
        if field is not None:
            # "\ud800" escapes decode to a lone surrogate, which no UTF-8 file (Parquet, TREC) can hold
            _bad(quarantine, path, f"line {no}", field, "a lone UTF-16 surrogate escape (\\ud800-\\udfff) "
                 "is not a character", line[:200])
            continue
        yield f"line {no}", obj


def _surrogate_field(obj: dict) -> str | None:
    """The first top-level field whose value holds a lone surrogate anywhere (None: clean)."""
    for k, v in obj.items():
        stack = [k, v]
        while stack:
            x = stack.pop()
            if isinstance(x, str):
                if not x.isascii():
                    try:
                        x.encode("utf-8")
                    except UnicodeEncodeError:
                        return str(k).encode("utf-8", "backslashreplace").decode()
            elif isinstance(x, dict):
                stack.extend(x.keys())
                stack.extend(x.values())
            elif isinstance(x, list):
                stack.extend(x)
    return None


# documents up to the documented limit (DEFAULT_MAX_DOC_CHARS) must fit in one CSV field; csv's own
# default (131,072) would refuse them, and a field past this limit is a record error with its line
CSV_FIELD_LIMIT = 2 * DEFAULT_MAX_DOC_CHARS


def iter_csv(path: Path, quarantine: list | None, delimiter: str = ",") -> Iterator[tuple[str, Any]]:
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        _bad(quarantine, path, f"line {line}", None, f"invalid UTF-8 at byte {e.start}", None)
        text = data.decode("utf-8", "replace")  # only reached in quarantine mode; the bad row is recorded
    text = text.removeprefix("\ufeff")  # a byte-order mark opening the file (one inside an id is refused)
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    i = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            i += 1
            _bad(quarantine, path, f"row {i} (line {reader.line_num})", None,
                 f"unreadable CSV record: {e} (documents may hold up to {DEFAULT_MAX_DOC_CHARS:,} characters)", None)
            continue
        i += 1
        if None in row:
            _bad(quarantine, path, f"row {i}", None, "more fields than the header", row)
            continue
        yield f"row {i}", row


def iter_parquet(path: Path, quarantine: list | None) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise InputError(str(path), None, None, f"not a readable Parquet file ({e})") from None
    i = 0
    for batch in pf.iter_batches(batch_size=10_000):
        for rec in batch.to_pylist():
            i += 1
            yield f"record {i}", rec


def iter_records(path: Path, quarantine: list | None) -> Iterator[tuple[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise InputError(str(path), None, None, "file not found")
    suf = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if suf in (".jsonl", ".json", ".ndjson"):
        return iter_jsonl(path, quarantine)
    if suf == ".csv":
        return iter_csv(path, quarantine)
    if suf == ".tsv":
        return iter_csv(path, quarantine, delimiter="\t")
    if suf == ".parquet":
        return iter_parquet(path, quarantine)
    raise InputError(str(path), None, None, f"unsupported file type {suf!r} (jsonl, csv, tsv, parquet)")


def _get(rec: Mapping, col: str, path, where, quarantine, required=True, id_like=False):
    if col not in rec:
        if required:
            _bad(quarantine, path, where, col, f"missing field '{col}'", rec)
            return _MISSING
        return None
    v = rec[col]
    if v is None:
        return None
    if id_like:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            _bad(quarantine, path, where, col, f"expected a string (or integer) id, got {type(v).__name__}", rec)
            return _MISSING
        if isinstance(v, float) and not math.isfinite(v):
            _bad(quarantine, path, where, col, f"id {v!r} is not a usable id", rec)
            return _MISSING
        if isinstance(v, (int, float)):
            v = str(int(v)) if float(v).is_integer() else str(v)
    return v


_MISSING = object()


# --- corpus / queries / qrels from tables --------------------------------------------------

DOC_MAP = {"doc_id": "doc_id", "text": "text", "title": "title"}
QUERY_MAP = {"query_id": "query_id", "text": "text"}


def _read_table(path, sink, id_col: str, text_col: str, what: str, make) -> None:
    """Every record of `path` that has an id and a text goes to `sink` as make(record, id, text,
    where) (None: `make` quarantined it); a file that gives no record at all is an error about
    `what` (an empty corpus is the corpus's error, not the qrels' unknown ids)."""
    q = sink.quarantine
    n0, nq0 = len(sink.records), len(q or [])
    for where, rec in iter_records(Path(path), q):
        rid = _get(rec, id_col, path, where, q, id_like=True)
        text = _get(rec, text_col, path, where, q)
        if rid is _MISSING or text is _MISSING:
            continue
        row = make(rec, rid.strip() if isinstance(rid, str) else rid, text, where)
        if row is not None:
            sink.add(row, str(path), where, rec)
    if len(sink.records) == n0:
        raise no_records(str(path), what, len(q or []) - nq0)


def read_documents(path, mapping: Mapping[str, str] | None, collection: str, sink) -> None:
    m = {**DOC_MAP, **(mapping or {})}

    def doc(rec, did, text, where):
        title = _get(rec, m["title"], path, where, sink.quarantine, required=False) if m.get("title") else None
        return {"doc_id": did, "title": title or None, "text": text, "collection": collection}
    _read_table(path, sink, m["doc_id"], m["text"], "documents", doc)


def read_queries(path, mapping: Mapping[str, str] | None, collection: str, split: str, sink) -> None:
    m = {**QUERY_MAP, **(mapping or {})}

    def query(rec, qid, text, where):
        if text is not None and not isinstance(text, str):
            _bad(sink.quarantine, path, where, m["text"], f"expected text, got {type(text).__name__}", rec)
            return None
        return existing_query(qid, (text or "").strip(), collection, split)
    _read_table(path, sink, m["query_id"], m["text"], "queries", query)


# --- whole collections ---------------------------------------------------------------------

def load_beir(path, name: str | None = None, quarantine: list | None = None,
              max_chars: int = DEFAULT_MAX_DOC_CHARS) -> Collection:
    """A BEIR folder: corpus.jsonl ({_id, title, text}), queries.jsonl ({_id, text}), qrels/<split>.tsv.

    A user's bare corpus is a BEIR folder too: without queries.jsonl it has no queries, without a
    qrels/ directory no judgments (the corpus-only adaptation arm needs neither; scoring does). A
    qrels/ directory that is there but holds no judgment is an error, as before."""
    root = Path(path)
    name = name or root.name
    docs, queries = make_sinks(quarantine, max_chars)
    read_documents(root / "corpus.jsonl", {"doc_id": "_id"}, name, docs)
    if (root / "queries.jsonl").exists() or (root / "qrels").is_dir():
        read_queries(root / "queries.jsonl", {"query_id": "_id"}, name, "all", queries)
    qtab = queries.to_table()
    # BEIR keeps one queries file for all splits: a query's split is the qrels file it appears in
    rows = []
    qdir = root / "qrels"
    if not qdir.is_dir():
        return Collection(name=name, documents=docs.to_table(), queries=qtab,
                          qrels=build_qrels([], str(qdir), quarantine), quarantine=quarantine_table(quarantine), grade_scale="no qrels (corpus only)")
    for f in sorted(qdir.glob("*.tsv")):
        split = f.stem
        for where, rec in iter_csv(f, quarantine, delimiter="\t"):
            try:
                qid, did, score = str(rec["query-id"]).strip(), str(rec["corpus-id"]).strip(), strict_int(rec["score"])
            except (KeyError, ValueError, TypeError) as e:
                _bad(quarantine, f, where, None, f"expected columns query-id, corpus-id, integer score ({e})", rec)
                continue
            rows.append(qrel(qid, did, score, rec["score"], split, where=f"{f.name} {where}"))
    if not rows and not quarantine:
        raise no_records(str(qdir / "*.tsv"), "judgments")
    documents = docs.to_table()
    rows = check_qrels_refs(rows, set(documents["doc_id"].to_pylist()), set(qtab["query_id"].to_pylist()),
                            str(qdir), quarantine)
    qrels = build_qrels(rows, str(qdir), quarantine)
    split_of: dict[str, str] = {}
    for q, s in zip(qrels["query_id"].to_pylist(), qrels["split"].to_pylist()):
        split_of.setdefault(q, s)
    qtab = qtab.set_column(qtab.schema.get_field_index("split"), "split",
                           pa.array([split_of.get(q, "unjudged") for q in qtab["query_id"].to_pylist()]))
    return Collection(name=name, documents=documents, queries=qtab, qrels=qrels,
                      quarantine=quarantine_table(quarantine), grade_scale="BEIR scores kept as grades")


def _find(root: Path, stem: str) -> Path:
    for suf in (".jsonl", ".parquet", ".json", ".csv"):
        p = root / f"{stem}{suf}"
        if p.exists():
            return p
    raise InputError(str(root / stem), None, None, f"no {stem}.jsonl/.parquet/.csv found")


def load_bright(path, name: str | None = None, quarantine: list | None = None,
                max_chars: int = DEFAULT_MAX_DOC_CHARS, split: str = "test") -> Collection:
    """BRIGHT on disk: documents.(jsonl|parquet) with id/content; examples.(jsonl|parquet) with
    id, query, gold_ids, excluded_ids. Gold ids -> grade 1; excluded_ids are kept in
    `Collection.excluded` and removed from runs before scoring (BRIGHT's protocol)."""
    root = Path(path)
    name = name or root.name
    docs, queries = make_sinks(quarantine, max_chars)
    dpath = _find(root, "documents")
    read_documents(dpath, {"doc_id": "id", "text": "content", "title": ""}, name, docs)
    epath = _find(root, "examples")
    rows, excluded = [], {}
    for where, rec in iter_records(epath, quarantine):
        qid = _get(rec, "id", epath, where, quarantine, id_like=True)
        text = _get(rec, "query", epath, where, quarantine)
        gold = rec.get("gold_ids")
        if qid is _MISSING or text is _MISSING:
            continue
        if not isinstance(gold, (list, tuple)):
            _bad(quarantine, epath, where, "gold_ids", "expected a list of document ids", rec)
            continue
        if not queries.add(existing_query(str(qid), (text or "").strip(), name, split), str(epath), where, rec):
            continue
        for d in gold:
            rows.append(qrel(str(qid), str(d), 1, 1, split, where=f"{where}"))
        ex = rec.get("excluded_ids") or []
        excluded[str(qid)] = {str(x) for x in ex if str(x) != "N/A"}
    documents = docs.to_table()
    qtab = queries.to_table()
    rows = check_qrels_refs(rows, set(documents["doc_id"].to_pylist()), set(qtab["query_id"].to_pylist()),
                            str(epath), quarantine)
    return Collection(name=name, documents=documents, queries=qtab, qrels=build_qrels(rows, str(epath), quarantine),
                      quarantine=quarantine_table(quarantine), excluded=excluded,
                      grade_scale="binary: gold_ids -> 1; excluded_ids removed from runs")


def load_folder(path, *, name: str | None = None, quarantine: list | None = None,
                max_chars: int = DEFAULT_MAX_DOC_CHARS, split: str = "test") -> Collection:
    """A folder holding corpus.(jsonl|parquet|csv) (doc_id, text, title), optionally
    queries.(jsonl|parquet|csv) (query_id, text) and TREC qrels (qrels.txt|qrels.tsv|qrels.trec|qrels)."""
    root = Path(path)
    corpus = _find(root, "corpus")
    try:
        queries = _find(root, "queries")
    except InputError:
        queries = None
    qrels = next((root / f for f in ("qrels.txt", "qrels.tsv", "qrels.trec", "qrels") if (root / f).is_file()), None)
    return load_tabular(corpus, name=name or root.name, queries=queries, qrels=qrels, split=split,
                        quarantine=quarantine, max_chars=max_chars)


def read_bright_excluded(path) -> dict[str, set[str]]:
    """{query id: excluded doc ids} of a BRIGHT folder's examples file (without loading the documents)."""
    epath = _find(Path(path), "examples")
    out: dict[str, set[str]] = {}
    for where, rec in iter_records(epath, []):
        qid = _get(rec, "id", epath, where, [], id_like=True)  # the id exactly as load_bright reads it
        if qid is not _MISSING and qid is not None:
            out[str(qid)] = {str(x) for x in (rec.get("excluded_ids") or []) if str(x) != "N/A"}
    return {q: ex for q, ex in out.items() if ex}


def load_tabular(corpus: str | Path, *, name: str | None = None, queries: str | Path | None = None,
                 qrels: str | Path | None = None, doc_mapping: Mapping[str, str] | None = None,
                 query_mapping: Mapping[str, str] | None = None, split: str = "test",
                 quarantine: list | None = None, max_chars: int = DEFAULT_MAX_DOC_CHARS) -> Collection:
    """A corpus in JSONL/CSV/TSV/Parquet with a column mapping (e.g. {"doc_id": "id", "text": "body"}),
    optional queries file (same formats) and TREC qrels."""
    name = name or Path(corpus).stem
    dsink, qsink = make_sinks(quarantine, max_chars)
    read_documents(corpus, doc_mapping, name, dsink)
    if queries:
        read_queries(queries, query_mapping, name, split, qsink)
    documents, qtab = dsink.to_table(), qsink.to_table()
    rows = read_trec_qrels(qrels, split, quarantine, as_rows=True) if qrels else []
    rows = check_qrels_refs(rows, set(documents["doc_id"].to_pylist()), set(qtab["query_id"].to_pylist()),
                            str(qrels), quarantine)
    return Collection(name=name, documents=documents, queries=qtab, qrels=build_qrels(rows, str(qrels), quarantine),
                      quarantine=quarantine_table(quarantine), grade_scale="qrels grades kept")


def load_hf_disk(path, *, name: str | None = None, corpus_split: str | None = None,
                 doc_mapping: Mapping[str, str] | None = None, quarantine: list | None = None,
                 max_chars: int = DEFAULT_MAX_DOC_CHARS) -> Collection:
    """A Hugging Face `datasets` corpus saved with `save_to_disk` (Dataset or DatasetDict)."""
    import datasets
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        raise InputError(str(path), None, None, f"not a dataset saved with save_to_disk ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        key = corpus_split or ("corpus" if "corpus" in ds else next(iter(ds)))
        ds = ds[key]
    m = {**DOC_MAP, **(doc_mapping or {})}
    name = name or Path(path).name
    dsink, qsink = make_sinks(quarantine, max_chars)
    for i, rec in enumerate(ds, start=1):
        where = f"record {i}"
        did = _get(rec, m["doc_id"], path, where, quarantine, id_like=True)
        text = _get(rec, m["text"], path, where, quarantine)
        if did is _MISSING or text is _MISSING:
            continue
        title = rec.get(m["title"]) if m.get("title") else None
        dsink.add({"doc_id": did, "title": title or None, "text": text, "collection": name}, str(path), where, rec)
    if not dsink.records:
        raise no_records(str(path), "documents", len(quarantine or []))
    return Collection(name=name, documents=dsink.to_table(), queries=qsink.to_table(),
                      qrels=build_qrels([], str(path), quarantine), quarantine=quarantine_table(quarantine))
