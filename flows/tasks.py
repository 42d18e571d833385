"""Shared Prefect task wrappers: one generic task runs any library stage through the runner core.

- Reuse: the task asks the runner core (`grouprank.executor.reusable` / `execute`) whether the
  stage's finished record in `<work_dir>/_stages/` (the one record store, shared with `grouprank
  run` and the benches) still holds for this configuration and these inputs (the cache key:
  `grouprank.cache_keys.cache_key`). If so the task ends in the state "Cached" with that record and
  does no work; else it runs the stage and records it. Prefect's own result cache is off: one store.
- Retries with exponential backoff (+ jitter) on transient errors only; a timeout per stage.
- LLM-calling stages that must run hold slots of the global concurrency limit `llm` (created if
  missing) while they run, so several flow runs share one endpoint's budget.
- Every stage that declares `progress_parts` gets a progress callback that updates a Prefect
  progress artifact; every library log record (heartbeat threads included) reaches the run logs.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed
from prefect.tasks import exponential_backoff

from grouprank import executor
from grouprank.config import RunConfig
from grouprank.stage import Stage
from grouprank.stage_list import all_stages

LLM_LIMIT = "llm"
DEFAULT_LLM_LIMIT = int(os.environ.get("GROUPRANK_LLM_CONCURRENCY", "16"))
RETRY_BACKOFF_S = float(os.environ.get("GROUPRANK_RETRY_BACKOFF_S", "30"))


# ------------------------------------------------------------------------------------------
# retries
# ------------------------------------------------------------------------------------------
_PERMANENT = (ValueError, TypeError, KeyError, AttributeError, ImportError, NotImplementedError,
              AssertionError, FileNotFoundError, PermissionError)


def is_transient(exc: BaseException | None) -> bool:
    """Retry connection problems, timeouts, rate limits, server errors; not programming or
    configuration errors (they would fail the same way again)."""
    if exc is None:
        return True
    try:
        from data_schemas import SchemaError
        from grouprank.errors import UserError
        if isinstance(exc, (UserError, SchemaError)):
            return False
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, _PERMANENT):
        return False
    return True


def retry_condition(task, task_run, state) -> bool:
    if state.name == "TimedOut":  # the abandoned attempt may still run: do not start a second one
        return False
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as e:  # the result itself could not be read: retrying is the safe bet
        exc = e
    return is_transient(exc if isinstance(exc, BaseException) else None)


# ------------------------------------------------------------------------------------------
# LLM concurrency
# ------------------------------------------------------------------------------------------
def ensure_llm_limit(default: int = DEFAULT_LLM_LIMIT) -> int:
    """Create the global concurrency limit `llm` if it does not exist; return its size."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    with get_client(sync_client=True) as client:
        try:
            return int(client.read_global_concurrency_limit_by_name(LLM_LIMIT).limit)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=LLM_LIMIT, limit=default, active=True))
                logging.getLogger("grouprank.flows").info(
                    "created global concurrency limit %r with %d slots", LLM_LIMIT, default)
            except ObjectAlreadyExists:  # created by a concurrent run
                pass
            return int(client.read_global_concurrency_limit_by_name(LLM_LIMIT).limit)


def llm_slots(cfg: RunConfig, limit: int) -> int:
    """Slots an LLM stage holds: the request concurrency its endpoints allow, capped by the limit."""
    want = max((e.max_concurrency for e in cfg.llm.endpoints), default=1)
    return max(1, min(int(limit), int(want)))


# ------------------------------------------------------------------------------------------
# progress artifact
# ------------------------------------------------------------------------------------------
class ProgressReporter:
    """A progress callback for library code; a background thread pushes the latest value to a
    Prefect progress artifact at most every `interval` seconds (the callback itself never blocks on
    the API, whatever thread or event loop calls it).

    Accepts `progress(done, total)` (LLMClient.map) and `progress(part, done, total)` (the judges'
    runner: part = judge id), handed to the stage as its context's callback; and, through `sink`
    (`grouprank.progress.reporting`), every `Progress` of the stage without a callback of its own
    (training steps, encodings): part = its label. The stage's own calls, where it makes them, set
    the percentage; the others then only name what runs. With `parts` parts the percentage is the
    mean of the parts' fractions, parts not started counting 0; it never goes back."""

    def __init__(self, artifact_id: str, label: str, interval: float = 1.0, parts: int = 1):
        self.artifact_id = artifact_id
        self.label = label
        self.interval = interval
        self.parts = max(1, int(parts))
        self.state: dict[str, tuple[int, int]] = {}       # the stage's own calls
        self.sink_state: dict[str, tuple[int, int]] = {}  # Progress objects without a callback
        self.current = ""
        self.current_state: tuple[int, int] = (0, 0)
        self.shown = 0.0
        self.version = 0
        self.sent_version = 0
        self.updates = 0
        self._stop = threading.Event()
        ctx = contextvars.copy_context()
        self._thread = threading.Thread(target=ctx.run, args=(self._loop,), daemon=True,
                                        name="grouprank-progress")
        self._thread.start()

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        if args and isinstance(args[0], str):
            part, rest = args[0], args[1:]
        else:
            part, rest = "", args
        if not rest:
            return
        done = int(rest[0])
        total = int(rest[1]) if len(rest) > 1 and rest[1] is not None else done
        self._set(self.state, part, done, total)

    def sink(self, label: str, done: int, total: int) -> None:
        """`grouprank.progress.reporting` target: a `Progress` (training steps, an encoding) moved."""
        self._set(self.sink_state, str(label), int(done), int(total))

    def _set(self, where: dict, part: str, done: int, total: int) -> None:
        where[part] = (done, total)
        self.current, self.current_state = part, (done, total)
        self.version += 1

    def percent(self) -> float:
        st = self.state or self.sink_state
        fr = [min(1.0, d / t) if t else 1.0 for d, t in st.values()]
        self.shown = max(self.shown, 100.0 * sum(fr) / max(self.parts, len(fr)))
        return self.shown

    def describe(self) -> str:
        done, total = self.current_state
        who = f" {self.current}" if self.current else ""
        n = len(self.state or self.sink_state)
        return f"{self.label}{who}: {done}/{total} ({n}/{max(self.parts, n)})"

    def _push(self) -> None:
        if self.version == self.sent_version:
            return
        v = self.version
        from prefect.artifacts import update_progress_artifact
        try:
            update_progress_artifact(artifact_id=self.artifact_id, progress=min(100.0, self.percent()),
                                     description=self.describe(), _sync=True)
            self.sent_version = v
            self.updates += 1
        except Exception as e:  # monitoring must never break the stage
            logging.getLogger("grouprank.flows").warning("progress update failed: %s", e)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._push()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._push()


# ------------------------------------------------------------------------------------------
# the stage task
# ------------------------------------------------------------------------------------------
# stage task runs going on in this process: task run id -> flow run id (a record logged by a thread
# that has no Prefect run context, e.g. a library helper thread, goes to them)
_RUNS: dict[str, str] = {}
_RUNS_LOCK = threading.Lock()


@contextlib.contextmanager
def _running_stage():
    """Register the current task run while its stage runs (see `_ToRun`)."""
    from prefect.context import TaskRunContext
    ctx = TaskRunContext.get()
    key = str(ctx.task_run.id) if ctx is not None else None
    if key is not None:
        with _RUNS_LOCK:
            _RUNS[key] = str(ctx.task_run.flow_run_id)
    try:
        yield
    finally:
        if key is not None:
            with _RUNS_LOCK:
                _RUNS.pop(key, None)


class _ToRun(logging.Filter):
    """Every library record reaches a run's logs, whichever thread logs it.

    A record logged with Prefect's run context (the stage's thread, and threads started with a copy
    of its context, like `grouprank.progress` heartbeats) goes where the context says. A record from
    a thread without it (a helper thread of a library) is given the `flow_run_id` (and, when a
    single stage runs, the `task_run_id`) that `APILogHandler` reads from a record's attributes,
    as Prefect's own run loggers set them (`extra=`); with no stage running it is not sent (Prefect
    would warn about each)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from prefect.context import FlowRunContext, TaskRunContext
        if getattr(record, "flow_run_id", None) or TaskRunContext.get() or FlowRunContext.get():
            return True
        with _RUNS_LOCK:
            runs = list(_RUNS.items())
        if not runs or len({f for _, f in runs}) > 1:
            return False
        record.flow_run_id = runs[0][1]
        record.task_run_id = runs[0][0] if len(runs) == 1 else None
        return True


def _library_logging() -> None:
    """Send the library's `grouprank.*` log records to the Prefect run logs too (from any thread)."""
    from prefect.logging.handlers import APILogHandler
    lg = logging.getLogger("grouprank")
    if not any(isinstance(h, APILogHandler) for h in lg.handlers):
        h = APILogHandler()
        h.setLevel(logging.INFO)
        h.addFilter(_ToRun())
        lg.addHandler(h)
    if lg.level == logging.NOTSET or lg.level > logging.INFO:
        lg.setLevel(logging.INFO)


def describe(stats: dict) -> str:
    """`k=v` for the numbers of a stage's stats (what the logs say)."""
    parts = []
    for k, v in (stats or {}).items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        parts.append(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v:,.4g}")
    return ", ".join(parts)


def secret_api_keys(cfg: RunConfig) -> dict[str, str]:
    """endpoint name -> key, for endpoints whose key lives in a Prefect Secret block
    (`llm.endpoints[].api_key_secret`); the others use their environment variable."""
    keys: dict[str, str] = {}
    for ep in cfg.llm.endpoints:
        if ep.api_key_secret:
            from prefect.blocks.system import Secret
            keys[ep.name] = str(Secret.load(ep.api_key_secret, _sync=True).get())
    return keys


def where() -> str:
    """Where this code runs: "dask-worker <address> pid N" inside a Dask worker, "ray-worker <node>
    pid N" inside a Ray worker, else "pid N"."""
    try:
        from distributed import get_worker
        return f"dask-worker {get_worker().address} pid {os.getpid()}"
    except (ImportError, ValueError):
        pass
    import sys
    if "ray" in sys.modules:  # never imports Ray where the flow does not use it
        import ray
        ctx = ray.get_runtime_context() if ray.is_initialized() else None
        if ctx is not None and ctx.worker.mode == ray.WORKER_MODE:
            return f"ray-worker {ctx.get_node_id()[:12]} pid {os.getpid()}"
    return f"pid {os.getpid()}"


def _run_stage_sync(st: Stage, config: RunConfig, inputs: dict[str, str], input_hashes: dict[str, str],
                    progress_artifact_id: str | None, found) -> dict:
    log = get_run_logger()
    parts = st.progress_parts(config) if st.progress_parts else 1
    reporter = ProgressReporter(progress_artifact_id, st.title or st.name, parts=parts) \
        if progress_artifact_id else None
    log.info("%s: starting with inputs %s", st.name,
             ", ".join(f"{k}={Path(v).name}" for k, v in inputs.items()) or "-")
    from grouprank.progress import reporting
    try:
        with _running_stage(), reporting(reporter.sink if reporter is not None else None):
            rec, _ = executor.execute(st, config, inputs, input_hashes, progress=reporter,
                                      api_keys=secret_api_keys(config) or None, looked_up=found)
    finally:
        if reporter is not None:
            reporter.close()
    log.info("%s: done in %.1f s: %s", st.name, rec["wall_s"], describe(rec["stats"]) or "(no numeric stats)")
    return {**rec, "state": "ran", "executor": where()}


# log_prints off: library stages report through `logging` (forwarded to the run logs); Prefect's
# print patching would also swallow what dill captures from stdout while `datasets` hashes the
# trainers' functions, dumping bytecode disassembly into the run logs. No Prefect cache and no
# persisted Prefect result: the runner core's record store is the one store.
@task(cache_policy=NO_CACHE, persist_result=False,
      retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=RETRY_BACKOFF_S),
      retry_jitter_factor=0.5, retry_condition_fn=retry_condition, log_prints=False)
async def run_stage(stage: str, config: RunConfig, inputs: dict[str, str], input_hashes: dict[str, str],
                    progress_artifact_id: str | None = None):
    """Run one library stage through the runner core; returns its record {"outputs", "stats", "llm",
    "fingerprints", "wall_s", "state"}, in the state "Cached" when the record store's was reused.

    The (blocking) library call runs in a worker thread that this coroutine awaits, so the task's
    timeout really ends the task run (state TimedOut; the abandoned thread finishes in the
    background, Python cannot kill it). LLM stages hold their `llm` slots around that await."""
    import anyio
    _library_logging()
    st = all_stages()[stage]
    found = await anyio.to_thread.run_sync(contextvars.copy_context().run, functools.partial(
        executor.reusable, st, config, input_hashes))
    if found[1] is not None:
        get_run_logger().info("%s: reused the finished record (%s): %s", stage, found[0],
                              describe(found[1].get("stats", {})))
        return Completed(name="Cached", message="reused from the record store",
                         data={**found[1], "state": "cached"})
    call = functools.partial(contextvars.copy_context().run, _run_stage_sync, st, config, inputs, input_hashes,
                             progress_artifact_id, found)
    if st.needs_llm(config):
        from prefect.concurrency.asyncio import concurrency
        log = get_run_logger()
        limit = await anyio.to_thread.run_sync(contextvars.copy_context().run, ensure_llm_limit)
        slots = llm_slots(config, limit)
        log.info("%s: waiting for %d slot(s) of global concurrency limit %r (%d)", stage, slots, LLM_LIMIT, limit)
        async with concurrency(LLM_LIMIT, occupy=slots, strict=False):
            log.info("%s: holding %d %r slot(s)", stage, slots, LLM_LIMIT)
            return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
    return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)


def stage_task(st: Stage, cfg: RunConfig):
    """The generic task configured for one stage of one run (name, timeout, retries, tags)."""
    return run_stage.with_options(
        name=f"stage-{st.name.replace('_', '-')}",
        task_run_name=st.name,
        timeout_seconds=st.timeout_s,
        retries=st.retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=RETRY_BACKOFF_S),
        tags=["grouprank", f"stage:{st.name}"] + (["uses-llm"] if st.needs_llm(cfg) else []),
    )


# ------------------------------------------------------------------------------------------
# shard tasks
# ------------------------------------------------------------------------------------------
@task(cache_policy=NO_CACHE, persist_result=False, retries=2,
      retry_delay_seconds=exponential_backoff(backoff_factor=RETRY_BACKOFF_S), retry_jitter_factor=0.5,
      retry_condition_fn=retry_condition, log_prints=False)
async def run_shard(stage: str, config: RunConfig, inputs: dict[str, str], spec: dict) -> dict:
    """One shard of a stage's shard plan (`grouprank.shards`), on whichever worker the flow's task
    runner gives it (a thread, a Dask or a Ray worker): reads the stage's inputs from their files,
    skips the shard when its completion record exists, else runs it and writes the record. Models
    are per-process shared, so a worker loads them once for all the shards it runs.

    Async like `run_stage`, for the same reason: the blocking shard runs in a thread this coroutine
    awaits, so the timeout ends the task run (a sync task in a Dask/Ray worker thread cannot be
    interrupted, and Prefect logs a warning saying so for every shard)."""
    import anyio

    from grouprank import shards
    _library_logging()
    rec = await anyio.to_thread.run_sync(contextvars.copy_context().run, functools.partial(
        shards.run_shard_paths, stage, config, inputs, spec), abandon_on_cancel=True)
    get_run_logger().info("%s %s on %s in %.1f s: %s", shards.ShardSpec.from_dict(spec).label, rec["state"],
                          where(), rec.get("wall_s") or 0.0, describe(rec.get("stats") or {}))
    return {**rec, "executor": where()}


def shard_task(st: Stage):
    """The shard task configured for one stage (name, timeout, tags)."""
    return run_shard.with_options(name=f"shard-{st.name.replace('_', '-')}", timeout_seconds=st.timeout_s,
                                  retries=st.retries, tags=["grouprank", f"stage:{st.name}", "shard"])
