"""Loaders for the five test collections in ../shared/data, read in place (never copied).

Grade mapping (higher = more relevant, 0 = judged not relevant):
- scifact: cited documents of a claim -> 1 (binary). Splits: BEIR's `train` = claims_train.csv
  (809 claims), BEIR's `test` = claims_validation.csv (300 claims). claims_test.csv carries no labels
  and is not loaded (SciFact's blind test set).
- trec_dl19_passage: NIST 0-3 kept as is (3 perfectly, 2 highly relevant, 1 related, 0 irrelevant);
  split `test`. The passage file is the judged pool, not the full MS MARCO corpus.
- cranfield: Cleverdon codes inverted: 1 (complete answer) -> 4, 2 -> 3, 3 -> 2, 4 (minimum interest)
  -> 1, and the undocumented -1 -> 0 (judged non-relevant). Queries are numbered by position in
  cran.qry (the n-th query is qrels query n), not by their `.I` id; split `test`.
- cisi, npl: binary -> 1; split `test`.
"""
from __future__ import annotations

import ast
import io
import io as _io
import json
import re
import tokenize
import zipfile
from pathlib import Path

import pyarrow as pa

from grouprank.errors import InputError

from .base import (DEFAULT_MAX_DOC_CHARS, Collection, build_qrels, check_qrels_refs, decode_lines,
                   existing_query, make_sinks, qrel, quarantine_table, strict_int)

BUILTIN = ("scifact", "trec_dl19_passage", "cranfield", "cisi", "npl")


def _need(path: Path) -> Path:
    if not path.exists():
        raise InputError(str(path), None, None, "collection file not found (set GROUPRANK_DATA_ROOT or "
                         "data.data_root to the folder holding the test collections)")
    return path


# --- SciFact -------------------------------------------------------------------------------

def parse_numpy_str_array(s: str) -> list[str]:
    """Parse a printed NumPy array of strings, e.g. "['a b.'\\n 'c']" -> ['a b.', 'c'].

    Adjacent Python string literals would concatenate under ast.literal_eval, so tokenize and
    evaluate each STRING token on its own."""
    s = s.strip()
    if not (s.startswith("[") and s.endswith("]")):
        raise ValueError("not a bracketed array")
    out = []
    for tok in tokenize.generate_tokens(_io.StringIO(s).readline):
        if tok.type == tokenize.STRING:
            out.append(ast.literal_eval(tok.string))
        elif tok.type in (tokenize.OP,) and tok.string not in "[]":
            raise ValueError(f"unexpected token {tok.string!r}")
        elif tok.type in (tokenize.NUMBER, tokenize.NAME):
            raise ValueError(f"unexpected token {tok.string!r}")
    return out


def parse_numpy_int_array(s: str) -> list[int]:
    s = s.strip()
    if not (s.startswith("[") and s.endswith("]")):
        raise ValueError("not a bracketed array")
    body = s[1:-1].replace(",", " ").split()
    return [int(float(x)) for x in body]


def load_scifact(root: Path, quarantine: list | None, max_chars: int = DEFAULT_MAX_DOC_CHARS) -> Collection:
    import csv

    zpath = _need(root / "scifact" / "scifact.zip")
    docs, queries = make_sinks(quarantine, max_chars)
    qrels_rows: list[dict] = []
    with zipfile.ZipFile(zpath) as zf:
        def rows(member: str):
            fname = f"{zpath}!{member}"
            text = zf.read(member).decode("utf-8")
            reader = csv.DictReader(io.StringIO(text, newline=""))
            for i, row in enumerate(reader, start=1):
                yield fname, f"row {i}", row

        for fname, where, row in rows("corpus_train.csv"):
            try:
                sents = parse_numpy_str_array(row.get("abstract") or "")
            except (ValueError, SyntaxError, tokenize.TokenError) as e:
                docs.reject(fname, where, "abstract", f"unparsable sentence array ({e})", row.get("abstract"))
                continue
            docs.add({"doc_id": (row.get("doc_id") or "").strip(), "title": (row.get("title") or "").strip() or None,
                      "text": " ".join(x.strip() for x in sents), "collection": "scifact"}, fname, where, row)
        for member, split in (("claims_train.csv", "train"), ("claims_validation.csv", "test")):
            seen_claims: dict[str, str] = {}
            for fname, where, row in rows(member):
                qid = (row.get("id") or "").strip()
                claim = (row.get("claim") or "").strip()
                # claims repeat once per evidence row: same id must carry the same text
                if qid in seen_claims:
                    if seen_claims[qid] != claim:
                        queries.reject(fname, where, "claim", f"claim {qid} repeated with different text", row)
                else:
                    if queries.add(existing_query(qid, claim, "scifact", split), fname, where, row):
                        seen_claims[qid] = claim
                try:
                    cited = parse_numpy_int_array(row.get("cited_doc_ids") or "")
                except ValueError as e:
                    queries.reject(fname, where, "cited_doc_ids", f"unparsable id array ({e})", row.get("cited_doc_ids"))
                    continue
                for did in cited:
                    qrels_rows.append(qrel(qid, str(did), 1, 1, split, where=f"{fname} {where}"))
    # claims repeat per evidence row: collapse identical (query, doc, split) citations
    uniq: dict[tuple, dict] = {}
    for r in qrels_rows:
        uniq.setdefault((r["query_id"], r["doc_id"], r["split"]), r)
    return _finish("scifact", docs, queries, list(uniq.values()), str(zpath), quarantine,
                   "binary: cited document -> 1")


# --- TREC DL 2019 passage ------------------------------------------------------------------

def load_trec_dl19(root: Path, quarantine: list | None, max_chars: int = DEFAULT_MAX_DOC_CHARS) -> Collection:
    base = root / "trec_dl19_passage"
    from .trec import read_trec_qrels
    docs, queries = make_sinks(quarantine, max_chars)
    dfile = _need(base / "dl2019_document.jsonl")
    for no, line in decode_lines(dfile.read_bytes(), str(dfile), quarantine):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            docs.reject(str(dfile), f"line {no}", None, f"malformed JSON ({e.msg})", line)
            continue
        docs.add({"doc_id": str(obj.get("docid", "")).strip(), "title": None, "text": obj.get("doc"),
                  "collection": "trec_dl19_passage"}, str(dfile), f"line {no}", line)
    qfile = _need(base / "msmarco-test2019-queries.tsv")
    for no, line in decode_lines(qfile.read_bytes(), str(qfile), quarantine):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            queries.reject(str(qfile), f"line {no}", None, "expected 'qid<TAB>query'", line)
            continue
        queries.add(existing_query(parts[0].strip(), parts[1].strip(), "trec_dl19_passage", "test"),
                    str(qfile), f"line {no}", line)
    qrfile = _need(base / "2019qrels-pass.txt")
    rows = read_trec_qrels(qrfile, split="test", quarantine=quarantine, grade_map=None, as_rows=True)
    return _finish("trec_dl19_passage", docs, queries, rows, str(qrfile), quarantine,
                   "NIST 0-3 kept (3 perfectly relevant ... 0 irrelevant); rel>=2 is relevant for binary metrics")


# --- SMART-format collections (Cranfield, CISI) --------------------------------------------

def parse_smart(path: Path, quarantine: list | None, fields: str = "TAWBX"):
    """Yield (line_no, id, {field_letter: text}) records of a SMART file (.I id, .T, .A, .W, ...)."""
    rec_id, rec_line, cur, buf = None, 0, None, {}
    for no, line in decode_lines(path.read_bytes(), str(path), quarantine):
        m = re.match(r"^\.([A-Z])(?:\s+(.*))?$", line.rstrip())
        if m:
            tag, rest = m.group(1), (m.group(2) or "").strip()
            if tag == "I":
                if rec_id is not None:
                    yield rec_line, rec_id, {k: " ".join(v).strip() for k, v in buf.items()}
                rec_id, rec_line, cur, buf = rest, no, None, {}
                continue
            cur = tag
            buf.setdefault(tag, [])
            if rest:
                buf[tag].append(rest)
            continue
        if rec_id is None:
            if line.strip():
                raise InputError(str(path), f"line {no}", None, "text before the first .I record")
            continue
        if cur is not None:
            buf[cur].append(line.strip())
    if rec_id is not None:
        yield rec_line, rec_id, {k: " ".join(v).strip() for k, v in buf.items()}


EMPTY_SOURCE_RECORD = "[empty record in the source collection]"
CRANFIELD_GRADES = {1: 4, 2: 3, 3: 2, 4: 1, -1: 0}


def load_cranfield(root: Path, quarantine: list | None, max_chars: int = DEFAULT_MAX_DOC_CHARS) -> Collection:
    base = root / "cranfield"
    docs, queries = make_sinks(quarantine, max_chars)
    dfile = _need(base / "cran.all.1400")
    for no, did, f in parse_smart(dfile, quarantine):
        text = f.get("W", "")
        if not text and not f.get("T"):
            # Documents 471 and 995 are empty in the original distribution yet judged (995 for
            # query 125). Keep them, explicitly marked, so qrels stay intact and counts match.
            text = EMPTY_SOURCE_RECORD
        docs.add({"doc_id": did, "title": f.get("T") or None, "text": text or f.get("T"), "collection": "cranfield"},
                 str(dfile), f"line {no}", f)
    qfile = _need(base / "cran.qry")
    for pos, (no, _qi, f) in enumerate(parse_smart(qfile, quarantine), start=1):
        # qrels number queries by position in the file, not by `.I`
        queries.add(existing_query(str(pos), f.get("W", ""), "cranfield", "test"), str(qfile), f"line {no}", f)
    rfile = _need(base / "cranqrel")

    def cran(parts):
        code = strict_int(parts[2])
        return parts[0], parts[1], CRANFIELD_GRADES[code], code
    rows = _qrel_lines(rfile, quarantine, cran, "expected 'qid docid code' with code in 1-4 or -1")
    return _finish("cranfield", docs, queries, rows, str(rfile), quarantine,
                   "Cleverdon codes inverted: 1->4, 2->3, 3->2, 4->1, -1->0")


def load_cisi(root: Path, quarantine: list | None, max_chars: int = DEFAULT_MAX_DOC_CHARS) -> Collection:
    base = root / "cisi"
    docs, queries = make_sinks(quarantine, max_chars)
    dfile = _need(base / "CISI.ALL")
    for no, did, f in parse_smart(dfile, quarantine):
        docs.add({"doc_id": did, "title": f.get("T") or None, "text": f.get("W", ""), "collection": "cisi"},
                 str(dfile), f"line {no}", f)
    qfile = _need(base / "CISI.QRY")
    for no, qid, f in parse_smart(qfile, quarantine):
        text = " ".join(x for x in (f.get("T"), f.get("W")) if x)
        queries.add(existing_query(qid, text, "cisi", "test"), str(qfile), f"line {no}", f)
    rfile = _need(base / "CISI.REL")

    def cisi(parts):
        if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
            raise ValueError
        return parts[0], parts[1], 1, 1
    rows = _qrel_lines(rfile, quarantine, cisi, "expected 'qid docid ...'")
    return _finish("cisi", docs, queries, rows, str(rfile), quarantine, "binary: listed -> 1")


# --- NPL -----------------------------------------------------------------------------------

def _slash_records(path: Path, quarantine: list | None):
    """Records separated by a line holding '/'; the first token is the id."""
    buf, start = [], None
    for no, line in decode_lines(path.read_bytes(), str(path), quarantine):
        if line.strip() == "/":
            if buf:
                yield start, buf
            buf, start = [], None
            continue
        if not line.strip():
            continue
        if start is None:
            start = no
        buf.append(line.strip())
    if buf:
        yield start, buf


def load_npl(root: Path, quarantine: list | None, max_chars: int = DEFAULT_MAX_DOC_CHARS) -> Collection:
    base = root / "npl"
    docs, queries = make_sinks(quarantine, max_chars)
    dfile = _need(base / "doc-text")
    for no, lines in _slash_records(dfile, quarantine):
        head = " ".join(lines).split(maxsplit=1)
        docs.add({"doc_id": head[0], "title": None, "text": head[1] if len(head) > 1 else "",
                  "collection": "npl"}, str(dfile), f"line {no}", lines)
    qfile = _need(base / "query-text")
    for no, lines in _slash_records(qfile, quarantine):
        head = " ".join(lines).split(maxsplit=1)
        queries.add(existing_query(head[0], head[1].lower() if len(head) > 1 else "", "npl", "test"),
                    str(qfile), f"line {no}", lines)
    rfile = _need(base / "rlv-ass")
    rows = []
    for no, lines in _slash_records(rfile, quarantine):
        toks = " ".join(lines).split()
        if not all(t.isdigit() for t in toks):
            _reject_line(quarantine, str(rfile), no, "expected numeric ids", lines)
            continue
        for did in toks[1:]:
            rows.append(qrel(toks[0], did, 1, 1, "test", where=f"line {no}"))
    return _finish("npl", docs, queries, rows, str(rfile), quarantine, "binary: listed -> 1")


# --- shared --------------------------------------------------------------------------------

def _qrel_lines(rfile: Path, quarantine: list | None, parse, expected: str) -> list[dict]:
    """QRELS rows of a whitespace-separated judgment file: parse(fields) -> (qid, docid, grade,
    original label); a line it cannot parse (IndexError / ValueError / KeyError) is rejected with
    `expected`, blank lines are skipped."""
    rows = []
    for no, line in decode_lines(rfile.read_bytes(), str(rfile), quarantine):
        parts = line.split()
        if not parts:
            continue
        try:
            qid, did, grade, original = parse(parts)
        except (IndexError, ValueError, KeyError):
            _reject_line(quarantine, str(rfile), no, expected, line)
            continue
        rows.append(qrel(qid, did, grade, original, "test", where=f"line {no}"))
    return rows


def _reject_line(quarantine, file, no, reason, raw):
    if quarantine is None:
        raise InputError(file, f"line {no}", None, reason)
    quarantine.append({"file": file, "record": f"line {no}", "field": None, "reason": reason, "raw": str(raw)[:500]})


def _finish(name, docs, queries, qrel_rows, qrels_file, quarantine, scale) -> Collection:
    documents = docs.to_table()
    qtab = queries.to_table()
    rows = check_qrels_refs(qrel_rows, set(documents["doc_id"].to_pylist()), set(qtab["query_id"].to_pylist()),
                            qrels_file, quarantine)
    return Collection(name=name, documents=documents, queries=qtab, qrels=build_qrels(rows, qrels_file, quarantine),
                      quarantine=quarantine_table(quarantine), grade_scale=scale)


LOADERS = {"scifact": load_scifact, "trec_dl19_passage": load_trec_dl19, "cranfield": load_cranfield,
           "cisi": load_cisi, "npl": load_npl}
