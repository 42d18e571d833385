"""Exports: sharded Parquet views, BEIR folder, TREC qrels, manifest.

Layout of an export directory (each Parquet view is a folder of shards
`train-00000-of-0000N.parquet`, the Hugging Face naming, so `load_dataset(export_dir, "<view>")`
also works through the card's `configs:` header):

    README.md               dataset card (card.py)            grade_histogram.png
    reranker_rl/            RERANKER_RL rows (TRL GRPOTrainer: prompt, gold_grades, gold_scores, ...)
    reranker_sft/           RERANKER_SFT rows (TRL SFTTrainer: messages, ...)
    retriever/              sentence-transformers view: anchor, positive, negative_1..negative_n only
    retriever_examples/     RETRIEVER_EXAMPLES rows (ids, grades, variable-length negatives)
    labels/                 LABELS (fused grades with every judge's raw value)
    qrels/                  QRELS (the synthesized qrels: source "synthetic", split "train")
    beir/                   corpus.jsonl, queries.jsonl, qrels/train.tsv
    qrels.train.trec        TREC qrels
    manifest.json           every file with rows, bytes, sha256, schema name/version (written last)

Every file is written atomically (temporary file in the same folder, then rename). Shards hold at
most `shard_max_rows` rows and about `shard_max_bytes` uncompressed bytes. Equal input and
configuration give byte-identical Parquet files (no timestamps or paths in the metadata; zstd
compression is deterministic). Stale shards of an earlier export in the same folder are removed
after the new ones are in place.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from data_schemas import QRELS
from data_schemas.base import Field, Table
from grouprank.atomic import atomic_write, public_mode, write_text_atomic

ST_TABLE_NAME = "retriever_st"
ST_TABLE_VERSION = 1
ROW_GROUP_BYTES = 64 * 2**20


def st_table(n_negatives: int) -> Table:
    """The sentence-transformers view: exactly the text columns MultipleNegativesRankingLoss takes."""
    S = pa.string()
    fields = [Field("anchor", S, doc="the query"), Field("positive", S, doc="a document graded >= the positive grade")]
    fields += [Field(f"negative_{i}", S, doc=f"hard negative {i} (guarded)") for i in range(1, n_negatives + 1)]
    return Table(ST_TABLE_NAME, ST_TABLE_VERSION, tuple(fields),
                 doc=f"anchor/positive/negative_1..{n_negatives} for sentence-transformers")


def st_view(examples: pa.Table, n_negatives: int) -> tuple[pa.Table, int]:
    """RETRIEVER_EXAMPLES -> the flat view; rows with fewer than n negatives are left out (count)."""
    cols: dict[str, list] = {"anchor": [], "positive": []}
    for i in range(1, n_negatives + 1):
        cols[f"negative_{i}"] = []
    short = 0
    for a, p, negs in zip(examples.column("anchor").to_pylist(), examples.column("positive").to_pylist(),
                          examples.column("negatives").to_pylist()):
        if len(negs) < n_negatives:
            short += 1
            continue
        cols["anchor"].append(a)
        cols["positive"].append(p)
        for i in range(n_negatives):
            cols[f"negative_{i + 1}"].append(negs[i])
    return pa.table(cols, schema=st_table(n_negatives).arrow_schema()), short


def synthetic_qrels(labels: pa.Table, split: str = "train") -> pa.Table:
    q = [str(x) for x in labels.column("query_id").to_pylist()]
    d = [str(x) for x in labels.column("doc_id").to_pylist()]
    g = [int(x) for x in labels.column("grade").to_pylist()]
    order = sorted(range(len(q)), key=lambda i: (q[i], d[i]))
    return QRELS.from_records([{"query_id": q[i], "doc_id": d[i], "grade": g[i], "original_label": str(g[i]),
                                "split": split, "source": "synthetic"} for i in order])


# --------------------------------------------------------------------------- atomic files

def write_jsonl_atomic(path: Path, records: Iterable[Mapping]) -> Path:
    def w(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return atomic_write(path, w)


# --------------------------------------------------------------------------- shards

def plan_shards(table: pa.Table, max_rows: int, max_bytes: int) -> list[tuple[int, int]]:
    """(offset, length) per shard: at most max_rows rows and about max_bytes uncompressed bytes."""
    n = table.num_rows
    if n == 0:
        return [(0, 0)]
    per_row = max(1, table.nbytes // n)
    rows = max(1, min(int(max_rows), int(max_bytes) // per_row))
    k = math.ceil(n / rows)
    base = math.ceil(n / k)  # even shards
    return [(i * base, min(base, n - i * base)) for i in range(k)]


def write_sharded(table: pa.Table, table_def: Table, out_dir: Path, *, max_rows: int, max_bytes: int,
                  extra: Mapping[str, Any] | None = None, prefix: str = "train") -> list[Path]:
    """Write `table` as shards `<prefix>-0000i-of-0000N.parquet` under out_dir (atomic each); remove
    other `<prefix>-*.parquet` files left by an earlier export."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_shards(table, max_rows, max_bytes)
    paths = []
    for i, (off, length) in enumerate(plan):
        part = table.slice(off, length)
        per_row = max(1, part.nbytes // max(1, part.num_rows))
        rg = max(1, min(max(1, part.num_rows), ROW_GROUP_BYTES // per_row))
        path = out_dir / f"{prefix}-{i:05d}-of-{len(plan):05d}.parquet"
        meta = dict(extra or {})
        meta.update({"shard": i, "num_shards": len(plan)})
        table_def.write(part, path, extra=meta, row_group_size=rg)
        public_mode(path)
        paths.append(path)
    keep = {p.name for p in paths}
    for old in out_dir.glob(f"{prefix}-*.parquet"):
        if old.name not in keep:
            old.unlink()
    return paths


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parquet_rows(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


# --------------------------------------------------------------------------- BEIR / TREC

def write_beir(out_dir: Path, documents: pa.Table, queries: Mapping[str, str], qrels: pa.Table) -> dict[str, Path]:
    """BEIR folder: corpus.jsonl ({_id, title, text}), queries.jsonl ({_id, text}), qrels/train.tsv
    (header `query-id corpus-id score`, every graded pair including grade 0)."""
    out_dir = Path(out_dir)
    ids = [str(x) for x in documents.column("doc_id").to_pylist()]
    titles = documents.column("title").to_pylist() if "title" in documents.column_names else [None] * len(ids)
    texts = documents.column("text").to_pylist()
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    corpus = write_jsonl_atomic(out_dir / "corpus.jsonl",
                                ({"_id": ids[i], "title": titles[i] or "", "text": texts[i]} for i in order))
    q_in_qrels = set(qrels.column("query_id").to_pylist())
    qpath = write_jsonl_atomic(out_dir / "queries.jsonl",
                               ({"_id": q, "text": queries[q]} for q in sorted(queries) if q in q_in_qrels))
    rows = zip(qrels.column("query_id").to_pylist(), qrels.column("doc_id").to_pylist(),
               qrels.column("grade").to_pylist())
    text = "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in rows)
    tsv = write_text_atomic(out_dir / "qrels" / "train.tsv", text)
    return {"beir_corpus": corpus, "beir_queries": qpath, "beir_qrels": tsv}


def write_trec(path: Path, qrels: pa.Table) -> Path:
    """TREC qrels (`qid 0 docid grade`), atomically (`grouprank.collections.trec.write_trec_qrels`)."""
    from grouprank.collections.trec import write_trec_qrels
    return write_trec_qrels(qrels, path)
