"""A local pool for shard plans (`grouprank run --shard-workers N`): the pending shards of a stage
mapped over N worker processes on this machine. Each worker reads the stage's inputs from their
files and keeps the models it loads for the next shard (per-process caches), so a model loads once
per worker. The Prefect flow maps the same shards as tasks on its task runner instead.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Sequence

from grouprank.shards import Mapper, ShardSpec, run_shard_paths


def process_pool(workers: int) -> Mapper:
    """A mapper running shards on `workers` local processes (spawned: no state copied from here)."""
    def mapper(stage_name: str, cfg, input_paths: dict, specs: Sequence[ShardSpec]) -> list[dict]:
        if not specs:
            return []
        out = []
        with ProcessPoolExecutor(max_workers=max(1, min(workers, len(specs))),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            futs = [pool.submit(run_shard_paths, stage_name, cfg, dict(input_paths), s.as_dict()) for s in specs]
            for f in as_completed(futs):
                out.append(f.result())  # a failed shard fails the stage (ShardError names it)
        return out
    return mapper
