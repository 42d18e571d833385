"""The `Collection` every loader returns, and the record sink that validates input records.

Grade convention (all loaders): integer, higher = more relevant, 0 = judged not relevant.
The source's own label is kept verbatim in `qrels.original_label`.

Bad input never vanishes: a record that fails validation raises `InputError` naming the file,
line/record and field, or — when quarantine is requested — becomes a row of the quarantine
table with its reason, and is counted in the summary.
"""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from data_schemas import DOCUMENTS, QRELS, QUARANTINE, QUERIES, SchemaError, Table
from grouprank.errors import InputError

# A document larger than this is rejected (error or quarantine), not silently truncated.
DEFAULT_MAX_DOC_CHARS = 2_000_000
# Ids are written into TREC run/qrels and BEIR TSV files, whose columns are separated by whitespace:
# an id must not contain whitespace, control or invisible format characters (a newline in a doc id
# would forge a qrels line, a BOM would make 'q1' and '\ufeffq1' two queries).
MAX_ID_CHARS = 1000
_ID_BAD = re.compile("[\\s\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f"
                     "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]")
# Grades are small non-negative integers (higher = more relevant); a source label outside this range
# is a data error, not a grade (and beyond int64 it cannot even be stored).
MAX_GRADE = 1000
_CHAR_NAMES = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", " ": "a space",
               "\ufeff": "a byte-order mark (U+FEFF)", "\x00": "a NUL byte"}


def _invisible(ch: str) -> bool:
    """A character that renders as nothing or changes the look of its neighbour: Unicode format
    characters (category Cf: zero-width joiners, bidi controls, tag characters U+E0000-E007F),
    other controls, surrogates, line/paragraph separators, and variation selectors (U+FE00-FE0F,
    U+E0100-E01EF), which make two ids that print the same compare different."""
    o = ord(ch)
    if 0xFE00 <= o <= 0xFE0F or 0xE0100 <= o <= 0xE01EF:
        return True
    return unicodedata.category(ch) in ("Cf", "Cc", "Cs", "Zs", "Zl", "Zp")


_STRICT_INT = re.compile(r"[+-]?[0-9]+")


def strict_int(v: Any) -> int:
    """An integer from a source label, strictly: ASCII digits with an optional sign (surrounding
    whitespace allowed). Python's int() also reads '1_0' as 10 and Arabic-Indic digits; a label like
    that is a data error, not a grade. Raises ValueError naming the value."""
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is not an integer")
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if v.is_integer():
            return int(v)
        raise ValueError(f"{v!r} is not an integer")
    t = str(v).strip()
    if not _STRICT_INT.fullmatch(t):
        raise ValueError(f"{str(v)[:40]!r} is not an integer (digits 0-9 with an optional sign)")
    return int(t)


def id_problem(v: Any) -> str | None:
    """Why `v` cannot be an id (None when it can): not a string, empty, too long, or containing
    whitespace / control / invisible format characters."""
    if isinstance(v, bool) or not isinstance(v, str):
        return f"expected a string id, got {type(v).__name__}"
    if not v:
        return "empty id"
    if len(v) > MAX_ID_CHARS:
        return f"id of {len(v):,} characters (at most {MAX_ID_CHARS:,})"
    m = _ID_BAD.search(v)
    if m is None:
        if v.isascii():
            return None
        pos = next((i for i, c in enumerate(v) if _invisible(c)), None)
        if pos is None:
            return None
        ch, start = v[pos], pos
    else:
        ch, start = m.group(0), m.start()
    what = _CHAR_NAMES.get(ch) or f"U+{ord(ch):04X} ({unicodedata.name(ch, 'an invisible character').lower()})"
    return (f"id {v[:80]!r} contains {what} at position {start}: ids are written into TREC and TSV "
            "files, where whitespace, control and invisible characters would split or forge a line, or make "
            "two ids that print the same differ")


def grade_problem(g: Any) -> str | None:
    """Why `g` cannot be a grade (None when it can)."""
    if isinstance(g, bool) or not isinstance(g, int):
        return f"grade {g!r} is not an integer"
    if g < 0:
        return f"negative grade {g} (grades are integers >= 0, 0 = judged not relevant)"
    if g > MAX_GRADE:
        return f"grade {str(g)[:30]} is out of range (0..{MAX_GRADE})"
    return None


def score_problem(x: float) -> str | None:
    return None if math.isfinite(x) else f"score {x!r} is not a finite number"


@dataclass
class Collection:
    name: str
    documents: pa.Table
    queries: pa.Table
    qrels: pa.Table
    quarantine: pa.Table = field(default_factory=QUARANTINE.empty)
    excluded: dict[str, set[str]] = field(default_factory=dict)  # BRIGHT excluded_ids per query
    grade_scale: str = ""  # how source labels map to grades

    def queries_for(self, split: str | None) -> pa.Table:
        if split is None:
            return self.queries
        return self.queries.filter(pc.equal(self.queries["split"], split))

    def qrels_for(self, split: str | None) -> pa.Table:
        if split is None:
            return self.qrels
        return self.qrels.filter(pc.equal(self.qrels["split"], split))

    @property
    def splits(self) -> list[str]:
        return sorted(set(self.queries["split"].to_pylist()) | set(self.qrels["split"].to_pylist()))

    def stats(self) -> dict[str, Any]:
        def block(q: pa.Table, r: pa.Table) -> dict[str, Any]:
            grades: dict[int, int] = {}
            for g in r["grade"].to_pylist():
                grades[g] = grades.get(g, 0) + 1
            return {"queries": q.num_rows,
                    "judged_queries": len(set(r["query_id"].to_pylist())),
                    "qrels": r.num_rows,
                    "grades": {int(k): v for k, v in sorted(grades.items())}}
        out = {"collection": self.name, "documents": self.documents.num_rows,
               **block(self.queries, self.qrels),
               "splits": {s: block(self.queries_for(s), self.qrels_for(s)) for s in self.splits},
               "quarantined": self.quarantine.num_rows,
               "grade_scale": self.grade_scale}
        return out


class RecordSink:
    """Collects validated records for one table; routes bad ones to an error or the quarantine."""

    def __init__(self, table: Table, quarantine: list[dict] | None, *, unique: str | None = None,
                 max_chars: int | None = None, text_fields: tuple[str, ...] = ()):
        self.table = table
        self.quarantine = quarantine  # None = raise on bad input
        self.unique = unique
        self.max_chars = max_chars
        self.text_fields = text_fields
        self.records: list[dict] = []
        self._seen: dict[Any, str] = {}

    def reject(self, file: str, record: str, fld: str | None, reason: str, raw: Any = None) -> None:
        if self.quarantine is None:
            raise InputError(file, record, fld, reason)
        self.quarantine.append({"file": str(file), "record": record, "field": fld, "reason": reason,
                                "raw": None if raw is None else str(raw)[:500]})

    def add(self, rec: Mapping[str, Any], file: str, record: str, raw: Any = None) -> bool:
        rec = dict(rec)
        if isinstance(self.unique, str):
            why = id_problem(rec.get(self.unique))
            if why:
                self.reject(file, record, self.unique, why, raw)
                return False
        for f in self.text_fields:
            v = rec.get(f)
            if v is not None and not isinstance(v, str):
                self.reject(file, record, f, f"expected text, got {type(v).__name__}", raw)
                return False
            if self.max_chars and isinstance(v, str) and len(v) > self.max_chars:
                self.reject(file, record, f, f"text of {len(v):,} chars exceeds the limit of "
                            f"{self.max_chars:,} (raise max_doc_chars to accept it)", raw=(v[:200] + "…"))
                return False
        try:
            self.table.validate_record(rec, where="")
        except SchemaError as e:
            msg = str(e).split(": : ", 1)[-1]
            fld = None
            if msg.startswith("field '"):
                fld = msg.split("field '", 1)[1].split("'", 1)[0]
                msg = msg.split(": ", 1)[1] if ": " in msg else msg
            self.reject(file, record, fld, msg, raw)
            return False
        if self.unique:
            key = rec[self.unique] if isinstance(self.unique, str) else tuple(rec[k] for k in self.unique)
            if key in self._seen:
                self.reject(file, record, self.unique if isinstance(self.unique, str) else None,
                            f"duplicate id {key!r} (first seen at {self._seen[key]})", raw)
                return False
            self._seen[key] = record
        self.records.append(rec)
        return True

    def to_table(self) -> pa.Table:
        return self.table.from_records(self.records, validate=False)


def quarantine_table(rows: list[dict] | None) -> pa.Table:
    return QUARANTINE.from_records(rows or [], validate=False)


def check_qrels_refs(qrels: list[dict], doc_ids: set[str], query_ids: set[str], file: str,
                     quarantine: list[dict] | None) -> list[dict]:
    """Qrels must point at known documents and queries; unknown ones are errors (or quarantined)."""
    kept = []
    for i, r in enumerate(qrels):
        bad = row_problem(r)  # a bad id or grade is blamed as such, not as an unknown reference
        if bad is None and r["doc_id"] not in doc_ids:
            bad = ("doc_id", f"unknown document id {r['doc_id']!r}")
        elif bad is None and r["query_id"] not in query_ids:
            bad = ("query_id", f"unknown query id {r['query_id']!r}")
        if bad:
            where = r.get("_where", f"record {i}")
            if quarantine is None:
                raise InputError(file, where, bad[0], bad[1])
            quarantine.append({"file": file, "record": where, "field": bad[0], "reason": bad[1], "raw": None})
            continue
        kept.append(r)
    return kept


def row_problem(r: Mapping[str, Any]) -> tuple[str, str] | None:
    """(field, reason) when a qrels row has a bad id or grade."""
    for f in ("query_id", "doc_id"):
        why = id_problem(r.get(f))
        if why:
            return f, why
    why = grade_problem(r.get("grade"))
    return ("grade", why) if why else None


def bad_record(quarantine: list | None, path, where, field, reason, raw) -> None:
    """A bad input record: an `InputError` naming file, record and field, or (with a quarantine
    list) a quarantine row."""
    if quarantine is None:
        raise InputError(str(path), where, field, reason)
    quarantine.append({"file": str(path), "record": where, "field": field, "reason": reason,
                       "raw": None if raw is None else str(raw)[:500]})


def no_records(file: str, what: str, quarantined: int = 0) -> InputError:
    """The error for an input file that yields nothing usable."""
    if quarantined:
        return InputError(file, None, None, f"no valid {what}: all {quarantined} records were refused (see the "
                          "quarantine table)")
    return InputError(file, None, None, f"no {what}: the file is empty or has only a header")


def decode_lines(data: bytes, file: str, quarantine: list[dict] | None):
    """Yield (line_no, text) with strict UTF-8; a bad line is an error or a quarantine row. A
    byte-order mark at the start of the file is dropped (one inside an id is refused later)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for no, raw in enumerate(data.split(b"\n"), start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            yield no, raw.decode("utf-8")
        except UnicodeDecodeError as e:
            reason = f"invalid UTF-8 at byte {e.start}"
            if quarantine is None:
                raise InputError(file, f"line {no}", None, reason) from None
            quarantine.append({"file": file, "record": f"line {no}", "field": None, "reason": reason,
                               "raw": raw[:500].decode("utf-8", "replace")})


def make_sinks(quarantine: list[dict] | None, max_chars: int | None = DEFAULT_MAX_DOC_CHARS):
    docs = RecordSink(DOCUMENTS, quarantine, unique="doc_id", max_chars=max_chars, text_fields=("text", "title"))
    queries = RecordSink(QUERIES, quarantine, unique="query_id", max_chars=max_chars, text_fields=("text",))
    return docs, queries


def existing_query(qid: str, text: str, collection: str, split: str) -> dict:
    return {"query_id": qid, "text": text, "collection": collection, "split": split, "source": "existing",
            "source_doc_id": None, "generator_model": None, "template_version": None, "query_type": None,
            "roundtrip_rank": None, "decision": "kept", "decision_detail": None}


def qrel(qid: str, did: str, grade: int, original: Any, split: str, where: str | None = None) -> dict:
    r = {"query_id": qid, "doc_id": did, "grade": int(grade), "original_label": str(original),
         "split": split, "source": "human"}
    if where:
        r["_where"] = where
    return r


def build_qrels(rows: list[dict], file: str, quarantine: list[dict] | None) -> pa.Table:
    """Validate qrels rows (duplicates of (query, doc, split) are an error or quarantined)."""
    seen: dict[tuple, str] = {}
    out = []
    for i, r in enumerate(rows):
        where = r.pop("_where", f"record {i}")
        bad = row_problem(r)
        if bad:
            if quarantine is None:
                raise InputError(file, where, bad[0], bad[1])
            quarantine.append({"file": file, "record": where, "field": bad[0], "reason": bad[1], "raw": None})
            continue
        k = (r["query_id"], r["doc_id"], r["split"])
        if k in seen:
            reason = f"duplicate judgment for query {k[0]!r} doc {k[1]!r} (first at {seen[k]})"
            if quarantine is None:
                raise InputError(file, where, "doc_id", reason)
            quarantine.append({"file": file, "record": where, "field": "doc_id", "reason": reason, "raw": None})
            continue
        seen[k] = where
        out.append(r)
    return QRELS.from_records(out, validate=False)
