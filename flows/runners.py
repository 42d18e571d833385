"""Task runner selection: threads (default), Dask (local cluster or a real one), Ray.

    GROUPRANK_TASK_RUNNER=thread                      ThreadPoolTaskRunner (GROUPRANK_MAX_WORKERS, 4)
    GROUPRANK_TASK_RUNNER=dask                        DaskTaskRunner on a local cluster
                                                      (GROUPRANK_DASK_WORKERS processes, default 2,
                                                      one thread each, bound to 127.0.0.1, no dashboard)
    GROUPRANK_TASK_RUNNER=tcp://scheduler:8786        DaskTaskRunner on an existing Dask cluster
    GROUPRANK_TASK_RUNNER=dask://scheduler:8786       (same)
    GROUPRANK_TASK_RUNNER=ray                         RayTaskRunner, local Ray (GROUPRANK_RAY_CPUS slots,
                                                      default the cores; 200 MB object store)
    GROUPRANK_TASK_RUNNER=ray://head:10001            RayTaskRunner on an existing Ray cluster

The flows read the variable when their module is imported (a worker's flow-run process imports
them fresh, so `job_variables.env` in prefect.yaml chooses the runner per deployment). In Python:
`synthesize.with_options(task_runner=make_task_runner("dask"))`.

Dask/Ray workers run the stage tasks, so they need this project installed (same Python env) and
access to the work dir (a shared filesystem on a real cluster) and to the Prefect API
(PREFECT_API_URL in their environment).
"""
from __future__ import annotations

import os


def make_task_runner(spec: str | None = None, *, n_workers: int | None = None):
    spec = (spec if spec is not None else os.environ.get("GROUPRANK_TASK_RUNNER", "thread")).strip()
    low = spec.lower()
    if low in ("", "thread", "threads", "default"):
        from prefect.task_runners import ThreadPoolTaskRunner
        return ThreadPoolTaskRunner(max_workers=int(os.environ.get("GROUPRANK_MAX_WORKERS", "4")))
    if low == "dask":
        from prefect_dask import DaskTaskRunner
        n = n_workers or int(os.environ.get("GROUPRANK_DASK_WORKERS", "2"))
        return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs={
            "n_workers": n, "threads_per_worker": 1, "processes": True,
            "host": "127.0.0.1", "dashboard_address": None})
    if low.startswith(("dask://", "tcp://", "tls://")):
        from prefect_dask import DaskTaskRunner
        address = "tcp://" + spec[len("dask://"):] if low.startswith("dask://") else spec
        return DaskTaskRunner(address=address)
    if low == "ray" or low.startswith("ray://"):
        try:
            from prefect_ray import RayTaskRunner
        except ImportError as e:  # pragma: no cover - the `cluster` extra
            raise RuntimeError("GROUPRANK_TASK_RUNNER=ray needs the `cluster` extra "
                               "(`pip install -e .[cluster]`: ray, prefect-ray)") from e
        if low != "ray":
            return RayTaskRunner(address=spec)
        # a local Ray: GROUPRANK_RAY_CPUS worker slots (default: the machine's cores), a small object
        # store (tasks pass file paths and records, never tables), no dashboard
        n = n_workers or int(os.environ.get("GROUPRANK_RAY_CPUS", "0")) or (os.cpu_count() or 2)
        return RayTaskRunner(init_kwargs={
            "num_cpus": n, "include_dashboard": False, "log_to_driver": True,
            "object_store_memory": int(float(os.environ.get("GROUPRANK_RAY_OBJECT_STORE_MB", "200")) * 2**20)})
    raise ValueError(f"unknown task runner {spec!r} (thread, dask, tcp://HOST:PORT, ray, ray://HOST:PORT)")


def runner_name(runner) -> str:
    return type(runner).__name__
