"""TREC files: qrels (`qid 0 docid rel`) and runs (`qid Q0 docid rank score tag`), read with the
same checks as every loader (bad lines name file, line and field) and written atomically."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pyarrow as pa

from data_schemas import RUNS
from grouprank.atomic import atomic_write
from grouprank.errors import InputError

from .base import (bad_record as _bad, build_qrels, decode_lines, id_problem, no_records, qrel, score_problem,
                   strict_int)


def read_trec_qrels(path, split: str = "test", quarantine: list | None = None, grade_map: Mapping[int, int] | None = None,
                    as_rows: bool = False):
    """TREC qrels: `qid 0|Q0 docid rel` per line. Returns QRELS rows (as_rows) or a table."""
    path = Path(path)
    if not path.exists():
        raise InputError(str(path), None, None, "file not found")
    rows = []
    n_lines, nq0 = 0, len(quarantine or [])
    for no, line in decode_lines(path.read_bytes(), str(path), quarantine):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4:
            _bad(quarantine, path, f"line {no}", None, "expected 4 columns 'qid iter docid rel'", line)
            continue
        try:
            rel = strict_int(parts[3])
        except ValueError:
            _bad(quarantine, path, f"line {no}", "rel", f"relevance {parts[3]!r} is not an integer", line)
            continue
        if grade_map and rel not in grade_map:
            _bad(quarantine, path, f"line {no}", "rel", f"relevance {rel} is not one of this collection's labels "
                 f"{sorted(grade_map)}", line)
            continue
        grade = grade_map[rel] if grade_map else rel
        rows.append(qrel(parts[0], parts[2], grade, rel, split, where=f"line {no}"))
        n_lines += 1
    if not n_lines and not (quarantine and len(quarantine) > nq0):
        raise no_records(str(path), "judgments")
    # ids and grades (negative, out of range) are checked with the rows: build_qrels / check_qrels_refs
    return rows if as_rows else build_qrels(rows, str(path), quarantine)


def read_trec_run(path, system: str | None = None) -> pa.Table:
    """TREC run: `qid Q0 docid rank score tag` per line -> RUNS table (re-ranked by score)."""
    path = Path(path)
    if not path.exists():
        raise InputError(str(path), None, None, "file not found")
    recs, seen = [], set()
    for no, line in decode_lines(path.read_bytes(), str(path), None):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise InputError(str(path), f"line {no}", None, "expected 6 columns 'qid Q0 docid rank score tag'")
        try:
            score = float(parts[4])
        except ValueError:
            raise InputError(str(path), f"line {no}", "score", f"{parts[4]!r} is not a number") from None
        if score_problem(score):  # nan would sort first, inf above every real score
            raise InputError(str(path), f"line {no}", "score", score_problem(score))
        for col, v in (("qid", parts[0]), ("docid", parts[2])):
            if id_problem(v):
                raise InputError(str(path), f"line {no}", col, id_problem(v))
        if (parts[0], parts[2]) in seen:
            raise InputError(str(path), f"line {no}", "docid", f"document {parts[2]!r} listed twice for query {parts[0]!r}")
        seen.add((parts[0], parts[2]))
        recs.append({"query_id": parts[0], "doc_id": parts[2], "score": score, "system": system or parts[5]})
    if not recs:
        raise no_records(str(path), "run lines")
    return run_table(recs)


def run_table(recs: list[dict]) -> pa.Table:
    """Assign ranks by descending score (ties by doc_id) per query and build a RUNS table."""
    by_q: dict[str, list[dict]] = {}
    for r in recs:
        by_q.setdefault(r["query_id"], []).append(r)
    out = []
    for qid in by_q:
        for i, r in enumerate(sorted(by_q[qid], key=lambda r: (-r["score"], r["doc_id"])), start=1):
            out.append({**r, "rank": i})
    return RUNS.from_records(out, validate=False)


def write_trec_run(run: pa.Table, path, tag: str | None = None) -> Path:
    """Write a ranking as a TREC run file (`qid Q0 docid rank score tag`, atomically), ordered by
    query, rank and doc id. `run`: a RUNS table (score, system) or a RANKING / CANDIDATES table
    (fused_score; give `tag`)."""
    path = Path(path)
    cols = run.column_names
    scores = run["score" if "score" in cols else "fused_score"].to_pylist()
    tags = run["system"].to_pylist() if tag is None else [tag] * run.num_rows
    rows = sorted(zip(run["query_id"].to_pylist(), run["rank"].to_pylist(), run["doc_id"].to_pylist(), scores, tags))
    check_ids_writable(run, path)
    return atomic_write(path, lambda tmp: tmp.write_text("".join(f"{q} Q0 {d} {r} {s:.8g} {t}\n"
                                                              for q, r, d, s, t in rows)))


def check_ids_writable(t: pa.Table, path) -> None:
    """Refuse to write a TREC/TSV file from ids that would split or forge its lines (the loaders
    refuse such ids already; this guards tables built by other means)."""
    for col in ("query_id", "doc_id"):
        if col in t.column_names:
            for v in set(t[col].to_pylist()):
                why = id_problem(v)
                if why:
                    raise InputError(str(path), None, col, f"cannot write: {why}")


def write_trec_qrels(qrels: pa.Table, path) -> Path:
    """Write QRELS as a TREC qrels file (`qid 0 docid grade`, atomically), in table order."""
    path = Path(path)
    check_ids_writable(qrels, path)
    rows = zip(qrels["query_id"].to_pylist(), qrels["doc_id"].to_pylist(), qrels["grade"].to_pylist())
    return atomic_write(path, lambda tmp: tmp.write_text("".join(f"{q} 0 {d} {g}\n" for q, d, g in rows)))
