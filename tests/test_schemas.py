"""Every table round-trips through Parquet with its schema name and version."""
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_schemas import ALL_TABLES, DOCUMENTS, QRELS, SchemaError
from data_schemas.base import META_NAME, META_VERSION


def _example(field):
    t = field.type
    if pa.types.is_string(t):
        return "x1"
    if pa.types.is_integer(t):
        return 1
    if pa.types.is_floating(t):
        return 0.5
    if pa.types.is_boolean(t):
        return False
    if pa.types.is_list(t):
        vt = t.value_type
        if pa.types.is_struct(vt):
            return [{"role": "user", "content": "hi"}]
        return [_example(pa.field("v", vt))]
    raise AssertionError(t)


def _record(table):
    rec = {}
    for f in table.fields:
        v = _example(f.arrow())
        for check in f.checks:  # satisfy one_of checks with their first allowed value
            if check(v) and "not one of" in check(v):
                v = eval(check(v).split("not one of ")[1])[0]
        rec[f.name] = v
    return rec


@pytest.mark.parametrize("name", sorted(ALL_TABLES))
def test_roundtrip(name, tmp_path):
    table = ALL_TABLES[name]
    t = table.from_records([_record(table)])
    p = table.write(t, tmp_path / f"{name}.parquet")
    md = pq.read_schema(p).metadata
    assert md[META_NAME] == name.encode() and md[META_VERSION] == str(table.version).encode()
    back = table.read(p)
    assert back.to_pylist() == t.to_pylist()


def test_wrong_version_is_clear(tmp_path):
    t = DOCUMENTS.from_records([{"doc_id": "d", "title": None, "text": "t", "collection": "c"}])
    p = DOCUMENTS.write(t, tmp_path / "docs.parquet")
    md = dict(pq.read_schema(p).metadata)
    md[META_VERSION] = b"0"
    pq.write_table(pq.read_table(p).replace_schema_metadata(md), p)
    with pytest.raises(SchemaError, match=r"docs.parquet: table 'documents' schema version 0 in file, this code reads version 1"):
        DOCUMENTS.read(p)


def test_wrong_table_and_foreign_file(tmp_path):
    t = DOCUMENTS.from_records([{"doc_id": "d", "title": None, "text": "t", "collection": "c"}])
    p = DOCUMENTS.write(t, tmp_path / "docs.parquet")
    with pytest.raises(SchemaError, match="expected table 'qrels' but file holds table 'documents'"):
        QRELS.read(p)
    pq.write_table(pa.table({"a": [1]}), tmp_path / "foreign.parquet")
    with pytest.raises(SchemaError, match="no grouprank schema metadata"):
        QRELS.read(tmp_path / "foreign.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(SchemaError, match="junk.parquet: not a readable Parquet file"):
        QRELS.read(tmp_path / "junk.parquet")


def test_column_difference_is_named(tmp_path):
    t = pa.table({"doc_id": ["d"], "text": ["t"], "collection": ["c"]})
    md = DOCUMENTS.arrow_schema().metadata
    pq.write_table(t.replace_schema_metadata(md), tmp_path / "d.parquet")
    with pytest.raises(SchemaError, match=r"missing column\(s\) \['title'\]"):
        DOCUMENTS.read(tmp_path / "d.parquet")


def test_validation_names_row_and_field():
    with pytest.raises(SchemaError, match="record 1: field 'text': empty"):
        DOCUMENTS.from_records([{"doc_id": "a", "title": None, "text": "ok", "collection": "c"},
                                {"doc_id": "b", "title": None, "text": "  ", "collection": "c"}])
    with pytest.raises(SchemaError, match="duplicate key"):
        DOCUMENTS.from_records([{"doc_id": "a", "title": None, "text": "x", "collection": "c"}] * 2)
    with pytest.raises(SchemaError, match="'source'.*not one of"):
        QRELS.validate_record({"query_id": "q", "doc_id": "d", "grade": 1, "original_label": "1",
                               "split": "t", "source": "robot"})


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    t = DOCUMENTS.from_records([{"doc_id": "d", "title": None, "text": "t", "collection": "c"}])

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError):
        DOCUMENTS.write(t, tmp_path / "x.parquet")
    assert list(tmp_path.iterdir()) == []


def test_deterministic_bytes(tmp_path):
    t = DOCUMENTS.from_records([{"doc_id": str(i), "title": None, "text": f"t{i}", "collection": "c"} for i in range(50)])
    a = DOCUMENTS.write(t, tmp_path / "a.parquet").read_bytes()
    b = DOCUMENTS.write(t, tmp_path / "b.parquet").read_bytes()
    assert a == b
