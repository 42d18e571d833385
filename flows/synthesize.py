"""Prefect flow `synthesize`: the whole pipeline end to end.

    load -> mine_queries -> retrieve -> judge -> fuse -> build_datasets
         -> [export, train_retriever, train_reranker] -> evaluate

(the stage list comes from `grouprank.stage_list`, the wiring from the stages' declared inputs; stages in one bracket run in
parallel on the task runner). Every stage is a retried Prefect task that the runner core reuses when its record still holds
(`flows.tasks.run_stage`); a rerun with the same configuration recomputes nothing and sends no
LLM call. Artifacts: see `flows.artifacts`. The run summary goes to `<work_dir>/run_summary.json`.

Run it:
    python -m flows.synthesize --set data.collection=cranfield --set queries.max_queries=20
    python -m flows.synthesize --config run.yaml --task-runner dask      # local 2-worker Dask cluster
With no PREFECT_API_URL set, Prefect starts an ephemeral server for the run (set
PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120 on a fresh database). Deployments: prefect.yaml.
"""
from __future__ import annotations

import sys

from prefect import flow

from grouprank.config import RunConfig

from flows.dag import run_stages
from flows.runners import make_task_runner


@flow(name="synthesize", task_runner=make_task_runner(), log_prints=True)
def synthesize(config: RunConfig = RunConfig()) -> dict:
    """GroupRank data synthesis end to end: load, mine queries, retrieve, judge, fuse, build
    datasets, export, train retriever and reranker, evaluate. Cached stages are skipped."""
    return run_stages(config, None, "synthesize", summary_file="run_summary.json")


def run_synthesize(cfg: RunConfig, task_runner: str | None = None) -> dict:
    """Run the end-to-end flow in this process (ephemeral Prefect server when no PREFECT_API_URL)
    and return its summary: {"summary_path", "exports", "stages", ...}. `task_runner`: see
    flows.runners (None: GROUPRANK_TASK_RUNNER or threads)."""
    f = synthesize if task_runner is None else synthesize.with_options(task_runner=make_task_runner(task_runner))
    return f(config=cfg)


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.synthesize [--config FILE] [--set K=V ...] [--task-runner dask]`."""
    from flows.__main__ import main as flows_main
    return flows_main(["synthesize", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
