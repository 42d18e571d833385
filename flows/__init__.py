"""Prefect 3 orchestration for the GroupRank pipeline (thin glue over `grouprank`).

- `flows.synthesize.synthesize`: the end-to-end flow; `flows.stage_flows`: one flow per stage,
  generated from the stage list (its prerequisites come from the cache).
- `flows.tasks`: the one generic stage task (reuse or run through the runner core,
  `grouprank.executor`, and its record store; retries with exponential backoff, timeouts, the `llm`
  global concurrency limit, progress artifacts).
- `flows.artifacts`: the run's markdown/table/progress/histogram artifacts.
- `flows.runners`: thread / Dask / Ray task runners (GROUPRANK_TASK_RUNNER).

Deployments: prefect.yaml; local server + worker: scripts/prefect_local.sh.
"""

from grouprank.console import quiet_progress_bars

quiet_progress_bars()  # off a terminal (a worker's log): no library progress bars, set before they are imported
