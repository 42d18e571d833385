"""What a stage is: declared once, in its own package, run by the executor.

    STAGE = Stage(
        name="my_stage", title="what it does", run=run,
        inputs=(table("judgments", JUDGMENTS),),
        outputs=(table("my_labels", LABELS), file("my_report", "my_report.json")),
        sections=("data", "judges"),
    )

    def run(inputs: dict, cfg: RunConfig, ctx: StageContext) -> StageResult: ...

- An input is named after the output that feeds it (`judgments` above is the judge stage's
  `judgments`); `grouprank.stage_list` derives the wiring from these names, so it is written nowhere else.
- Table ports carry their `data_schemas` table: the executor reads an input table and hands the stage
  an Arrow table; the stage returns an Arrow table (or `TableOut` with metadata) and the executor
  writes it. Stages never read or write their stage Parquet files themselves.
- File and folder ports are things a stage writes into `ctx.out_dir` (a report, a model, an
  export folder); the stage returns their paths and receives upstream ones as `Path`s.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from data_schemas.base import Table

HOUR = 3600.0


@dataclass(frozen=True)
class Port:
    """One named input or output of a stage."""
    name: str
    kind: Literal["table", "file", "dir"]
    table: "Table | None" = None   # kind "table": the data_schemas definition
    filename: str | None = None    # outputs: name inside the stage's folder
    optional: bool = False         # inputs: may be absent; outputs: the stage may not produce it
    doc: str = ""
    # table inputs: also accept Parquet files/folders of other layouts (the stage normalises them),
    # e.g. the exported sentence-transformers view as retriever examples
    lenient: bool = False

    @property
    def file(self) -> str:
        return self.filename or (f"{self.name}.parquet" if self.kind == "table" else self.name)


def table(name: str, tdef: "Table", filename: str | None = None, *, optional: bool = False, doc: str = "",
          lenient: bool = False) -> Port:
    return Port(name, "table", tdef, filename, optional, doc, lenient)


def file(name: str, filename: str | None = None, *, optional: bool = False, doc: str = "") -> Port:
    return Port(name, "file", None, filename, optional, doc)


def folder(name: str, filename: str | None = None, *, optional: bool = False, doc: str = "") -> Port:
    return Port(name, "dir", None, filename, optional, doc)


@dataclass
class TableOut:
    """An output table plus key-value metadata stored with it (`data_schemas` `extra`)."""
    table: "pa.Table"
    extra: Mapping[str, Any] | None = None


@dataclass
class StageResult:
    """What a stage returns: outputs by port name (Arrow table / TableOut / Path) and plain stats."""
    outputs: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageContext:
    """What the executor gives a stage besides its inputs and the configuration: where to write,
    progress, and the services built once from the configuration (an LLM client per endpoint and
    purpose, the reranker backend), so no stage builds them by hand."""
    out_dir: Path                                  # the stage's own folder (created)
    work_dir: Path                                 # the run's folder (shared caches: indexes, models, LLM cache)
    progress: Callable[..., None] | None = None    # progress(done, total) or progress(part, done, total)
    api_keys: dict[str, str] | None = None         # endpoint name -> key (Prefect Secret blocks)
    input_paths: dict[str, str] | None = None      # where the inputs were read from (provenance)
    cfg: Any = None                                # the run configuration the services are built from
    services: Callable[["StageContext", tuple], Any] | None = None  # builds them (grouprank.services.build)
    _services: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ atomic writers
    def path(self, filename: str) -> Path:
        """Where an output named `filename` goes in the stage's folder (parents created)."""
        p = self.out_dir / filename
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write_text(self, filename: str, text: str) -> Path:
        """Write a text file into the stage's folder atomically (a reader never sees half of it)."""
        from grouprank.atomic import write_text_atomic
        path = self.path(filename)
        write_text_atomic(path, text)
        return path

    def write_json(self, filename: str, obj: Any, indent: int | None = 2) -> Path:
        """Write a JSON report into the stage's folder atomically; returns its path."""
        import json
        return self.write_text(filename, json.dumps(obj, indent=indent, default=str))

    # ------------------------------------------------------------------ services
    def llm_client(self, endpoint: str | None = None, *, purpose: str, judge_id: str | None = None):
        """The LLM client for the endpoint named `endpoint` (None: the first of `llm.endpoints`),
        with the run's answer cache and the endpoint's key (a Prefect Secret's when the flow has
        one), built once per (endpoint, purpose, judge) for this stage run (`grouprank.services`)."""
        return self._service(("llm", endpoint, purpose, judge_id))

    def reranker_backend(self, model_path: str | Path | None = None):
        """The reranker backend the configuration describes (the trained model at `model_path`, or
        `rerank.backend`'s), with the effective settings; None when none is available."""
        return self._service(("reranker", str(model_path) if model_path else None))

    def close(self) -> None:
        """Release the services built for this stage run (HTTP pools, models); the executor calls it."""
        for svc in self._services.values():
            for obj in (svc, getattr(svc, "client", None)):
                if obj is not None and callable(getattr(obj, "close", None)):
                    obj.close()
        self._services.clear()

    def _service(self, key: tuple):
        if key not in self._services:
            if self.services is None:
                raise RuntimeError("this StageContext has no services (the executor gives them)")
            self._services[key] = self.services(self, key)
        return self._services[key]


@dataclass(frozen=True)
class Sharding:
    """How a stage splits its work into shards (`grouprank.shards` runs them, every runner alike):
    `plan(cfg, inputs) -> [params, ...]` (JSON-serialisable, one per shard; [] = nothing to split)
    and `run_shard(params, cfg, inputs) -> stats`, which stores its shard's result durably. The
    stage's own `run` is the merge: it consumes the shards' results in a fixed order, so its output
    is the unsharded run's, byte for byte."""
    plan: Callable[[Any, dict], list[dict]]
    run_shard: Callable[[dict, Any, dict], dict]


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[dict, Any, StageContext], StageResult]
    inputs: tuple[Port, ...] = ()
    outputs: tuple[Port, ...] = ()
    # config sections in the cache key: "section" or ("section", (excluded fields...)); () = all.
    # The executor records what the run reads (grouprank.config_reads) and refuses undeclared reads.
    sections: tuple = ()
    # files the stage reads besides its wired inputs, {name: path} for a configuration (a
    # collection's files, BRIGHT's excluded ids): hashed into the cache key
    reads: Callable[[Any], dict[str, str]] | None = None
    uses_llm: Callable[[Any], bool] | None = None
    # builds ML models in process (transformers / sentence-transformers / torch): run one at a time
    # per process (grouprank.model_lock says why)
    builds_models: bool = False
    timeout_s: float = 6 * HOUR
    retries: int = 2
    title: str = ""
    dirname: str | None = None     # folder under the work dir (default: the stage name)
    # extra modules (dotted, or paths relative to the repository root) whose code is in the cache key
    # besides what the stage's run module can import (grouprank.source_graph finds those)
    sources: tuple[str, ...] = ()
    # progress parts (e.g. one per judge) for the progress display
    progress_parts: Callable[[Any], int] | None = None
    # the CLI command (default: the name with dashes) and the stage's own options: `cli_args(parser)`
    # adds them, `cli_overrides(args)` turns them into config overrides {"section.key": value}
    command: str | None = None
    cli_args: Callable[[Any], None] | None = None
    cli_overrides: Callable[[Any], dict] | None = None
    # another job the command does instead of running the stage when its options ask for it:
    # `cli_action(args, cfg)` returns an exit code, or None to run the stage as usual
    cli_action: Callable[[Any, Any], int | None] | None = None
    help: str = ""
    # the stage splits its work into shards that any runner maps over its workers (grouprank.shards)
    sharding: Sharding | None = None

    @property
    def folder(self) -> str:
        return self.dirname or self.name

    @property
    def cli_name(self) -> str:
        return self.command or self.name.replace("_", "-")

    @property
    def package(self) -> str:
        return self.run.__module__.rsplit(".", 1)[0]

    def input(self, name: str) -> Port:
        return next(p for p in self.inputs if p.name == name)

    def output(self, name: str) -> Port:
        return next(p for p in self.outputs if p.name == name)

    def needs_llm(self, cfg) -> bool:
        return bool(self.uses_llm and self.uses_llm(cfg))
