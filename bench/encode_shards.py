"""Encode a collection's corpus into the retrieval index store with several worker processes
(the resumable sharded path of grouprank.first_stage.store.encode_shards), so a later
`retrieve()` / bench run over the same work dir reuses the embeddings.

    .venv/bin/python bench/encode_shards.py --collection scifact --backend torch --worker 0 --workers 2 &
    .venv/bin/python bench/encode_shards.py --collection scifact --backend torch --worker 1 --workers 2 &

Worker w starts at shard w and walks all shards (w, w+1, ..., wrapping), skipping those done or
claimed by another worker, so any number of workers can join at any time; whoever finishes last
writes the manifest. A killed worker's shard is redone by the next worker once its claim is stale
(or at once by a plain `retrieve()`, which does not look at claims).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import ROOT, setup  # noqa: E402  (bench/_common.py)
from grouprank.first_stage.dense import BACKENDS  # noqa: E402  (light: numpy only)

setup("encode_shards")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--collection", required=True)
    ap.add_argument("--backend", default="torch", choices=list(BACKENDS))
    ap.add_argument("--work-dir", default=str(ROOT / "grouprank_output" / "bench_retrieval"))
    ap.add_argument("--shard-size", type=int, default=512)
    ap.add_argument("--worker", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    from grouprank.collections import load_collection
    from grouprank.config import RetrievalConfig
    from grouprank.first_stage.dense import DenseEncoder
    from grouprank.first_stage.store import IndexStore, corpus_fingerprint, encode_shards, stable_key
    from grouprank.text import document_texts
    work = Path(args.work_dir) / args.collection
    rcfg = RetrievalConfig()
    ids, texts = document_texts(load_collection(args.collection).documents, rcfg.include_title)
    enc = DenseEncoder(backend=args.backend, batch_size=rcfg.batch_size, max_seq_length=rcfg.max_seq_length,
                       cache_dir=work / "models")
    ch = corpus_fingerprint(ids, texts)
    d = IndexStore(work / "indexes").path("emb", stable_key("emb", ch, enc.model_id))
    n_shards = -(-len(texts) // args.shard_size)
    mine = [(args.worker + j) % n_shards for j in range(n_shards)]
    t = time.perf_counter()
    done = encode_shards(d, texts, enc.encode_documents, enc.dimension, args.shard_size, mine,
                         meta={"kind": "embeddings", "corpus": ch, "model_id": enc.model_id},
                         progress=lambda n: print(f"[{args.collection} {args.backend} w{args.worker}] +{n} docs "
                                                  f"({time.perf_counter() - t:.0f}s)", flush=True))
    print(f"[{args.collection} {args.backend} w{args.worker}] shards {mine} in {time.perf_counter() - t:.0f}s; "
          f"complete={done}; {d}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
