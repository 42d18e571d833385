"""The machinery behind every table: one `Table` definition gives the Arrow schema,
record validation, and versioned Parquet I/O.

Every Parquet file written through `Table.write` carries the table name and schema version
in its key-value metadata (`grouprank.schema`, `grouprank.schema_version`); `Table.read`
refuses a file whose name, version or columns differ, naming the file and the difference.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

META_NAME = b"grouprank.schema"
META_VERSION = b"grouprank.schema_version"
META_EXTRA = b"grouprank.extra"


class SchemaError(ValueError):
    """A table, file or record does not match its schema definition."""


# --- value checks: each returns an error message or None -------------------------------

def non_empty(v: Any) -> str | None:
    if isinstance(v, str) and not v.strip():
        return "empty or whitespace-only string"
    if isinstance(v, (list, tuple)) and len(v) == 0:
        return "empty list"
    return None


def one_of(*allowed: Any) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in allowed else f"{v!r} not one of {list(allowed)}"
    check.__doc__ = f"one of {list(allowed)}"
    return check


def in_range(lo: float | None = None, hi: float | None = None) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if isinstance(v, float) and math.isnan(v):
            return "NaN"
        if lo is not None and v < lo:
            return f"{v!r} < {lo}"
        if hi is not None and v > hi:
            return f"{v!r} > {hi}"
        return None
    check.__doc__ = f"in [{lo}, {hi}]"
    return check


def finite(v: Any) -> str | None:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return f"{v!r} is not finite"
    return None


@dataclass(frozen=True)
class Field:
    name: str
    type: pa.DataType
    nullable: bool = False
    doc: str = ""
    checks: tuple[Callable[[Any], str | None], ...] = ()

    def arrow(self) -> pa.Field:
        return pa.field(self.name, self.type, nullable=self.nullable,
                        metadata={b"doc": self.doc.encode()} if self.doc else None)


@dataclass(frozen=True)
class Table:
    """One table of the pipeline. `version` is bumped on any incompatible change."""

    name: str
    version: int
    fields: tuple[Field, ...]
    doc: str = ""
    key: tuple[str, ...] = ()  # columns that must be unique together (validated)
    _by_name: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {f.name: f for f in self.fields})

    # --- schema ---------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.fields]

    def arrow_schema(self, extra: Mapping[str, Any] | None = None) -> pa.Schema:
        md = {META_NAME: self.name.encode(), META_VERSION: str(self.version).encode()}
        if extra:
            md[META_EXTRA] = json.dumps(extra, sort_keys=True, default=str).encode()
        return pa.schema([f.arrow() for f in self.fields], metadata=md)

    # --- validation -----------------------------------------------------------------
    def validate_record(self, rec: Mapping[str, Any], where: str = "record") -> None:
        """Raise SchemaError naming `where` (e.g. 'corpus.jsonl line 12') and the field."""
        missing = [f.name for f in self.fields if f.name not in rec and not f.nullable]
        if missing:
            raise SchemaError(f"{self.name}: {where}: missing field(s) {missing}")
        unknown = sorted(set(rec) - set(self._by_name))
        if unknown:
            raise SchemaError(f"{self.name}: {where}: unknown field(s) {unknown}")
        for f in self.fields:
            v = rec.get(f.name)
            if v is None:
                if not f.nullable:
                    raise SchemaError(f"{self.name}: {where}: field '{f.name}' is null")
                continue
            for check in f.checks:
                msg = check(v)
                if msg:
                    raise SchemaError(f"{self.name}: {where}: field '{f.name}': {msg}")

    def validate_table(self, table: pa.Table, where: str = "table") -> None:
        got = table.schema
        exp = self.arrow_schema()
        diff = _schema_diff(exp, got)
        if diff:
            raise SchemaError(f"{self.name}: {where}: {diff}")
        for f in self.fields:
            col = table.column(f.name)
            if not f.nullable and col.null_count:
                idx = next(i for i, v in enumerate(col.is_null().to_pylist()) if v)
                raise SchemaError(f"{self.name}: {where}: row {idx}: field '{f.name}' is null")
            if f.checks:
                for i, v in enumerate(col.to_pylist()):
                    if v is None:
                        continue
                    for check in f.checks:
                        msg = check(v)
                        if msg:
                            raise SchemaError(f"{self.name}: {where}: row {i}: field '{f.name}': {msg}")
        if self.key and table.num_rows:
            keys = table.select(list(self.key)).to_pylist()
            seen: dict[tuple, int] = {}
            for i, k in enumerate(keys):
                t = tuple(k[c] for c in self.key)
                if t in seen:
                    raise SchemaError(
                        f"{self.name}: {where}: row {i}: duplicate key {dict(zip(self.key, t))} "
                        f"(first at row {seen[t]})")
                seen[t] = i

    # --- construction ---------------------------------------------------------------
    def from_records(self, records: Iterable[Mapping[str, Any]], validate: bool = True) -> pa.Table:
        records = list(records)
        if validate:
            for i, r in enumerate(records):
                self.validate_record(r, where=f"record {i}")
        cols = {f.name: [r.get(f.name) for r in records] for f in self.fields}
        try:
            t = pa.table(cols, schema=self.arrow_schema())
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise SchemaError(f"{self.name}: cannot build table: {e}") from None
        if validate and self.key:
            self.validate_table(t)
        return t

    def from_pandas(self, df, validate: bool = True) -> pa.Table:
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise SchemaError(f"{self.name}: dataframe lacks column(s) {missing}")
        try:
            t = pa.Table.from_pandas(df[self.columns], schema=self.arrow_schema(), preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise SchemaError(f"{self.name}: cannot convert dataframe: {e}") from None
        if validate:
            self.validate_table(t)
        return t

    def empty(self) -> pa.Table:
        return self.arrow_schema().empty_table()

    # --- Parquet I/O ----------------------------------------------------------------
    def write(self, table: pa.Table, path: str | os.PathLike, *, extra: Mapping[str, Any] | None = None,
              validate: bool = True, row_group_size: int | None = None) -> Path:
        """Write atomically (temp file in the same folder, then rename): a crash never leaves
        a partial file under the final name. Output is deterministic for equal input."""
        path = Path(path)
        if validate:
            self.validate_table(table, where=str(path))
        table = table.replace_schema_metadata(self.arrow_schema(extra).metadata)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            # page checksums (CRC32): a reader (`read`) detects a flipped bit in any data page
            pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size,
                           write_statistics=True, store_schema=True, write_page_checksum=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def read(self, path: str | os.PathLike, *, columns: Sequence[str] | None = None) -> pa.Table:
        path = Path(path)
        if not path.exists():
            raise SchemaError(f"{self.name}: file not found: {path}")
        try:
            schema = pq.read_schema(path)
        except Exception as e:  # pyarrow raises several types for non-Parquet files
            raise SchemaError(f"{self.name}: {path}: not a readable Parquet file ({e})") from None
        self.check_file_schema(schema, path)
        try:  # pages written with a checksum are verified (Table.write writes them)
            table = pq.read_table(path, columns=list(columns) if columns else None,
                                  page_checksum_verification=True)
        except OSError as e:  # pyarrow: "CRC checksum verification failed", a corrupt page, ...
            raise SchemaError(f"{path}: table '{self.name}': the file is damaged ({e})") from None
        self.check_finite(table, str(path))
        return table

    def check_finite(self, table: pa.Table, where: str) -> None:
        """Fields with the `finite` check hold no NaN or infinity (vectorised: run on every read)."""
        import pyarrow.compute as pc
        for f in self.fields:
            if finite not in f.checks or f.name not in table.column_names:
                continue
            col = table.column(f.name)
            if not pa.types.is_floating(col.type):
                continue
            bad = pc.invert(pc.fill_null(pc.is_finite(col), True))
            if pc.any(bad).as_py():
                i = pc.index(bad, True).as_py()
                raise SchemaError(f"{self.name}: {where}: row {i}: field '{f.name}': "
                                  f"{col[i].as_py()!r} is not finite")

    def check_file_schema(self, schema: pa.Schema, path: str | os.PathLike) -> None:
        md = schema.metadata or {}
        name = md.get(META_NAME, b"").decode() or None
        version = md.get(META_VERSION, b"").decode() or None
        if name != self.name:
            raise SchemaError(f"{path}: expected table '{self.name}' but file holds "
                              f"{'table ' + repr(name) if name else 'no grouprank schema metadata'}")
        if version != str(self.version):
            raise SchemaError(f"{path}: table '{self.name}' schema version {version} in file, "
                              f"this code reads version {self.version}")
        diff = _schema_diff(self.arrow_schema(), schema)
        if diff:
            raise SchemaError(f"{path}: table '{self.name}' v{self.version}: {diff}")

    def describe(self) -> str:
        lines = [f"### `{self.name}` (v{self.version})", "", self.doc, "",
                 "| column | type | nullable | meaning |", "|---|---|---|---|"]
        for f in self.fields:
            lines.append(f"| {f.name} | {f.type} | {'yes' if f.nullable else 'no'} | {f.doc} |")
        return "\n".join(lines)


def read_extra(source: "str | os.PathLike | pa.Table") -> dict:
    """The `extra` metadata stored with a table: from a Parquet file, or an Arrow table read from one."""
    md = (source.schema.metadata if isinstance(source, pa.Table) else pq.read_schema(source).metadata) or {}
    raw = md.get(META_EXTRA)
    return json.loads(raw) if raw else {}


def _schema_diff(expected: pa.Schema, got: pa.Schema) -> str:
    exp = {f.name: f.type for f in expected}
    have = {f.name: f.type for f in got}
    parts = []
    missing = [n for n in exp if n not in have]
    extra = [n for n in have if n not in exp]
    if missing:
        parts.append(f"missing column(s) {missing}")
    if extra:
        parts.append(f"unexpected column(s) {extra}")
    for n in exp:
        if n in have and not have[n].equals(exp[n]):
            parts.append(f"column '{n}' has type {have[n]}, expected {exp[n]}")
    return "; ".join(parts)
