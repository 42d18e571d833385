"""Retriever training data: read, select, hold out, and turn into a sentence-transformers dataset.

Two on-disk forms are read the same way:

- the RETRIEVER_EXAMPLES table (`retriever_examples.parquet` of the build_datasets stage): one row
  per (query, positive) with the hard negatives as lists, ids and grades included;
- the exported sentence-transformers view (a Parquet file or a folder of shards) with columns
  `anchor, positive, negative_1 … negative_n` (ids optional: `query_id`, `positive_doc_id`,
  `negative_doc_ids`).

Both are normalised to one pandas frame (`EXAMPLE_COLUMNS`). The training dataset handed to
`SentenceTransformerTrainer` holds only the text columns `anchor, positive, negative_1..n` (the
trainer feeds every non-label column to the loss), with the same n for every row.
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from grouprank.trainsets.retriever import select_examples  # noqa: F401 - one definition, there

EXAMPLE_COLUMNS = ["query_id", "anchor", "positive_doc_id", "positive", "positive_grade",
                   "negative_doc_ids", "negatives", "negative_grades"]


def _neg_index(col: str) -> int | None:
    if col.startswith("negative_"):
        tail = col[len("negative_"):]
        if tail.isdigit():
            return int(tail)
    return None


def _parquet_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if not p.name.startswith("."))
        if not files:
            raise FileNotFoundError(f"no .parquet files under {path}")
        return files
    if not path.exists():
        raise FileNotFoundError(path)
    return [path]


def read_examples(path: str | Path) -> pd.DataFrame:
    """Read retriever examples (table or exported view; file or folder of shards) into a frame
    with `EXAMPLE_COLUMNS`. Missing ids are derived from the texts (stable hashes)."""
    import pyarrow.parquet as pq

    frames = []
    for f in _parquet_files(Path(path)):
        frames.append(pq.read_table(f).to_pandas())
    raw = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return normalise_examples(raw)


def _hid(text: str) -> str:
    return "h" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def normalise_examples(raw: pd.DataFrame) -> pd.DataFrame:
    """Table form (list columns) or exported form (negative_k columns) -> `EXAMPLE_COLUMNS`."""
    if "anchor" not in raw.columns or "positive" not in raw.columns:
        raise ValueError(f"retriever examples need 'anchor' and 'positive' columns; got {list(raw.columns)}")
    df = pd.DataFrame(index=raw.index)
    df["anchor"] = raw["anchor"].astype(str)
    df["positive"] = raw["positive"].astype(str)
    df["query_id"] = (raw["query_id"].astype(str) if "query_id" in raw.columns
                      else df["anchor"].map(_hid))
    df["positive_doc_id"] = (raw["positive_doc_id"].astype(str) if "positive_doc_id" in raw.columns
                             else df["positive"].map(_hid))
    df["positive_grade"] = (raw["positive_grade"].astype("Int64") if "positive_grade" in raw.columns
                            else pd.array([pd.NA] * len(raw), dtype="Int64"))
    if "negatives" in raw.columns:
        negs = [list(x) if x is not None else [] for x in raw["negatives"]]
    else:
        cols = sorted((c for c in raw.columns if _neg_index(c) is not None), key=_neg_index)
        negs = [[v for v in row if isinstance(v, str) and v] for row in raw[cols].itertuples(index=False)] \
            if cols else [[] for _ in range(len(raw))]
    df["negatives"] = negs
    if "negative_doc_ids" in raw.columns:
        df["negative_doc_ids"] = [[str(v) for v in x] if x is not None else [] for x in raw["negative_doc_ids"]]
    else:
        df["negative_doc_ids"] = [[_hid(t) for t in n] for n in negs]
    if "negative_grades" in raw.columns:
        df["negative_grades"] = [list(x) if x is not None else [] for x in raw["negative_grades"]]
    else:
        df["negative_grades"] = [[None] * len(n) for n in negs]
    bad = [i for i, (a, b) in enumerate(zip(df["negatives"], df["negative_doc_ids"])) if len(a) != len(b)]
    if bad:
        raise ValueError(f"{len(bad)} example row(s) have negatives and negative_doc_ids of different "
                         f"lengths (first row {bad[0]})")
    return df[EXAMPLE_COLUMNS].reset_index(drop=True)


def holdout_split(df: pd.DataFrame, fraction: float, seed: int = 13) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split by query (never a query on both sides): (train rows, held-out rows)."""
    qids = sorted(set(df["query_id"]))
    if fraction <= 0 or len(qids) < 2:
        return df, df.iloc[0:0]
    rng = random.Random(seed)
    rng.shuffle(qids)
    n = max(1, int(round(fraction * len(qids))))
    held = set(qids[:n])
    mask = df["query_id"].isin(held)
    return df[~mask].reset_index(drop=True), df[mask].reset_index(drop=True)


def qrels_from_examples(df: pd.DataFrame) -> pd.DataFrame:
    """The examples' positives as qrels (grade = positive_grade, or 1 when unknown)."""
    g = df["positive_grade"].fillna(1).astype(int).clip(lower=1)
    q = pd.DataFrame({"query_id": df["query_id"].astype(str), "doc_id": df["positive_doc_id"].astype(str),
                      "grade": g.values})
    return q.groupby(["query_id", "doc_id"], as_index=False)["grade"].max()


def resolve_n_negatives(df: pd.DataFrame, n_negatives: int | None) -> int:
    """None: the smallest number of negatives any row has (so every row is kept)."""
    if n_negatives is not None:
        return int(n_negatives)
    lens = [len(x) for x in df["negatives"]]
    return min(lens) if lens else 0


def teacher_scores(labels, judge: str | None = "local", scale: float = 0.1) -> dict[tuple[str, str], float]:
    """The distillation teacher's soft score of every labelled (query, document): `scale` x the
    0-10 score of judge `judge` in LABELS.judge_scores; where that judge has no score (or
    judge is None), the per-query min-max normalised fused score (in [0, 1]) instead."""
    import json

    from data_schemas import LABELS
    from grouprank.trainsets.common import as_table, labels_by_query
    t = as_table(labels, LABELS)
    by_q = labels_by_query(t)
    norm = {q: ql.norm_fused() for q, ql in by_q.items()}
    out: dict[tuple[str, str], float] = {}
    for q, d, js in zip(t.column("query_id").to_pylist(), t.column("doc_id").to_pylist(),
                        t.column("judge_scores").to_pylist()):
        q, d = str(q), str(d)
        v = None
        if judge is not None and js:
            try:
                v = json.loads(js).get(judge)
            except (TypeError, ValueError):
                v = None
        out[(q, d)] = float(v) * scale if isinstance(v, (int, float)) else float(norm[q][d])
    return out


def to_training_frame(df: pd.DataFrame, n_negatives: int | None, *, drop_short: bool = True,
                      seed: int = 13, teacher: dict[tuple[str, str], float] | None = None
                      ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fixed-width text frame `anchor, positive, negative_1..n` for the trainer, plus stats.

    Rows with fewer than n negatives are dropped (`drop_short`) or topped up with documents
    drawn at random from *other* queries' positives/negatives (random negatives; a document that
    is a positive of this query is never drawn).

    `teacher` ((query id, doc id) -> soft score, `teacher_scores`): adds the `label` column the
    distillation losses read, [s(positive), s(negative_1), ..., s(negative_n)]; a topped-up random
    negative (another query's document) scores 0; a row whose positive or hard negative the teacher
    did not score is dropped (`rows_dropped_no_teacher`)."""
    n = resolve_n_negatives(df, n_negatives)
    rng = random.Random(seed)
    pool: list[tuple[str, str, str]] = []  # (query_id, doc_id, text) of every document in the data
    if not drop_short:
        seen = set()
        for r in df.itertuples(index=False):
            for did, txt in [(r.positive_doc_id, r.positive), *zip(r.negative_doc_ids, r.negatives)]:
                if (r.query_id, did) not in seen:
                    seen.add((r.query_id, did))
                    pool.append((r.query_id, did, txt))
    positives_of: dict[str, set[str]] = {}
    for q, d in zip(df["query_id"], df["positive_doc_id"]):
        positives_of.setdefault(q, set()).add(d)
    rows, dropped, topped, no_teacher = [], 0, 0, 0
    for r in df.itertuples(index=False):
        negs = list(r.negatives[:n])
        neg_ids = list(r.negative_doc_ids[:n])
        if len(negs) < n:
            if drop_short:
                dropped += 1
                continue
            have = set(r.negative_doc_ids[:n]) | positives_of.get(r.query_id, set())
            tries = 0
            while len(negs) < n and pool and tries < 50 * n:
                tries += 1
                q, d, t = pool[rng.randrange(len(pool))]
                if q == r.query_id or d in have:
                    continue
                have.add(d)
                negs.append(t)
                neg_ids.append(None)
            if len(negs) < n:
                dropped += 1
                continue
            topped += 1
        row = {"anchor": r.anchor, "positive": r.positive}
        for i, t in enumerate(negs, 1):
            row[f"negative_{i}"] = t
        if teacher is not None:
            keys = [(r.query_id, r.positive_doc_id)] + [(r.query_id, d) for d in neg_ids if d is not None]
            if any(k not in teacher for k in keys):
                no_teacher += 1
                continue
            row["label"] = [float(teacher[(r.query_id, r.positive_doc_id)])] + \
                [float(teacher[(r.query_id, d)]) if d is not None else 0.0 for d in neg_ids]
        rows.append(row)
    cols = ["anchor", "positive"] + [f"negative_{i}" for i in range(1, n + 1)] + \
        (["label"] if teacher is not None else [])
    out = pd.DataFrame(rows, columns=cols)
    stats = {"rows_in": int(len(df)), "rows_out": int(len(out)), "rows_dropped_short": int(dropped),
             "rows_topped_up": int(topped), "n_negatives": int(n),
             **({"rows_dropped_no_teacher": int(no_teacher)} if teacher is not None else {}),
             "queries": int(df["query_id"].nunique())}
    return out, stats


def to_dataset(frame: pd.DataFrame):
    """pandas text frame -> `datasets.Dataset` (column order kept: anchor, positive, negatives)."""
    from datasets import Dataset
    return Dataset.from_pandas(frame, preserve_index=False)


def file_digest(paths: Iterable[str | Path]) -> str:
    """sha256 (16 hex) over the bytes of the given files (folders: their Parquet files)."""
    h = hashlib.sha256()
    for p in paths:
        for f in _parquet_files(Path(p)) if Path(p).is_dir() else [Path(p)]:
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def human_labels(qrels, candidates, *, split: str | None = "train"):
    """LABELS from the human qrels of `split` (trainsets.human.labels_from_qrels), where every pooled
    candidate of a judged query that the humans did not mark relevant is labelled grade 0 (the usual
    reading of sparse human judgments: judged queries, unjudged pool documents are negatives)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from data_schemas import CANDIDATES, QRELS
    from grouprank.trainsets.common import as_table
    from grouprank.trainsets.human import labels_from_qrels

    qr = as_table(qrels, QRELS)
    if split is not None and "split" in qr.column_names:
        qr = qr.filter(pc.equal(qr["split"], split))
    cand = as_table(candidates, CANDIDATES)
    q = [str(x) for x in qr.column("query_id").to_pylist()]
    d = [str(x) for x in qr.column("doc_id").to_pylist()]
    g = [int(x) for x in qr.column("grade").to_pylist()]
    judged = set(zip(q, d))
    queries_with_qrels = set(q)
    for cq, cd in zip(cand.column("query_id").to_pylist(), cand.column("doc_id").to_pylist()):
        cq, cd = str(cq), str(cd)
        if cq in queries_with_qrels and (cq, cd) not in judged:
            judged.add((cq, cd))
            q.append(cq), d.append(cd), g.append(0)
    return labels_from_qrels(pa.table({"query_id": q, "doc_id": d, "grade": pa.array(g, pa.int64())}), cand)


def human_examples(qrels, candidates, documents, queries, dc, *, split: str | None = "train",
                   positive_grade: int = 1):
    """The human reference with the synthetic data's negatives recipe: `human_labels`, then the same
    builder and false-negative guard as the synthetic data (trainsets.retriever.
    build_retriever_examples, retrieval-order negatives) with `positive_grade` (SciFact: binary, 1).
    Hard negatives are therefore the highest-ranked pool documents that are not human positives.
    Only queries kept by query mining (`queries.decision == "kept"`: the leakage guard applies)
    get examples. Returns (RETRIEVER_EXAMPLES table, build stats).

    qrels/candidates/documents/queries: Arrow tables, DataFrames or Parquet paths."""
    from data_schemas import CANDIDATES, DOCUMENTS, QUERIES
    from grouprank.text import document_text_map
    from grouprank.trainsets.common import as_table, candidate_order, kept_queries, labels_by_query
    from grouprank.trainsets.retriever import GuardSpec, build_retriever_examples

    cand = as_table(candidates, CANDIDATES)
    labs = labels_by_query(human_labels(qrels, cand, split=split))
    docs = document_text_map(as_table(documents, DOCUMENTS), {x for ql in labs.values() for x in ql.doc_ids})
    spec = GuardSpec(positive_grade=int(positive_grade), negative_max_grade=int(positive_grade) - 1,
                     margin=float(dc.false_negative_margin), negatives=int(dc.negatives_per_example),
                     max_positives=dc.max_positives_per_query)
    return build_retriever_examples(labs, kept_queries(as_table(queries, QUERIES)), docs, candidate_order(cand), spec)
