"""The one run configuration. The CLI, the Prefect flows and the deployments in prefect.yaml
all build a `RunConfig` the same way: defaults < YAML/JSON file < explicit overrides.

Every stage has its own section; a stage's cache key is derived from its section (and the
sections it depends on), so changing e.g. only `judges` reruns judging and what follows.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from grouprank.adaptation.config import AdaptationConfig
from grouprank.collections.config import DataConfig
from grouprank.evaluation.config import EvaluationConfig
from grouprank.first_stage.config import RetrievalConfig
from grouprank.judges.config import JudgeSpec, JudgesConfig
from grouprank.llm.config import LLMConfig, LLMEndpoint
from grouprank.paths import REPO_ROOT, default_data_root
from grouprank.prompts.config import PromptConfig
from grouprank.queries.config import QueryMiningConfig, QuerySource
from grouprank.reranker.config import RerankConfig, RerankerConfig
from grouprank.retriever_training.config import RetrieverTrainConfig
from grouprank.trainsets.config import DatasetsConfig

__all__ = ["RunConfig", "DataConfig", "QuerySource", "QueryMiningConfig", "RetrievalConfig", "LLMEndpoint",
           "LLMConfig", "JudgeSpec", "JudgesConfig", "DatasetsConfig", "RerankConfig", "RerankerConfig", "RetrieverTrainConfig",
           "EvaluationConfig", "PromptConfig", "REPO_ROOT", "default_data_root", "add_config_args", "config_from_args",
           "parse_override"]


class RunConfig(BaseModel):
    """One run of the pipeline."""

    # hide_input_in_errors: a validation error names the field, never the value (which may be a key)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)

    name: str = "default"
    work_dir: str = Field("grouprank_output", description="where tables, indexes, caches and exports go")
    seed: int = Field(13, description="the run's seed: pools, query and group sampling, shuffles, held-out "
                      "splits and training all derive their randomness from it")
    data: DataConfig = Field(default_factory=DataConfig)
    queries: QueryMiningConfig = Field(default_factory=QueryMiningConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    judges: JudgesConfig = Field(default_factory=JudgesConfig)
    datasets: DatasetsConfig = Field(default_factory=DatasetsConfig)
    reranker: RerankerConfig = Field(default_factory=RerankerConfig)
    rerank: RerankConfig = Field(default_factory=RerankConfig)
    retriever: RetrieverTrainConfig = Field(default_factory=RetrieverTrainConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    adaptation: AdaptationConfig = Field(default_factory=AdaptationConfig)

    @model_validator(mode="before")
    @classmethod
    def _mask_key_shapes(cls, data):
        """The one redaction pass over everything given (files and --set alike), before any
        validation error could repeat a value (grouprank.redact.mask_config)."""
        if not isinstance(data, dict):
            return data
        from grouprank.redact import mask_config
        return mask_config(data)

    @model_validator(mode="before")
    @classmethod
    def _preset_layer(cls, data):
        """defaults < the reranker preset < the file < --set: the preset fills only what the
        configuration does not set (grouprank.reranker.config.with_preset_layer)."""
        if not isinstance(data, dict):
            return data
        from grouprank.reranker.config import with_preset_layer
        return with_preset_layer(data)

    # --- helpers ---------------------------------------------------------------------
    @property
    def work_path(self) -> Path:
        return Path(self.work_dir).expanduser().resolve()

    def data_root(self) -> Path:
        return Path(self.data.data_root) if self.data.data_root else default_data_root()

    def section_hash(self, *sections: str) -> str:
        payload = {s: getattr(self, s).model_dump(mode="json") for s in sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def endpoint(self, name: str | None) -> LLMEndpoint:
        for e in self.llm.endpoints:
            if e.name == name:
                return e
        raise KeyError(f"no LLM endpoint named {name!r} in llm.endpoints "
                       f"(have {[e.name for e in self.llm.endpoints]})")

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> "RunConfig":
        data: dict[str, Any] = {}
        if path:
            p = Path(path)
            text = p.read_text()
            if p.suffix in (".yaml", ".yml"):
                import yaml
                data = yaml.safe_load(text) or {}
            else:
                data = json.loads(text)
        for k, v in (overrides or {}).items():
            _set_dotted(data, k, v)
        return cls.model_validate(data)


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    """Set `value` at a dotted key; a number indexes an existing list (`llm.endpoints.0.model`)."""
    keys = dotted.split(".")
    for k in keys[:-1]:
        if isinstance(d, list) and k.isdigit() and int(k) < len(d):
            d = d[int(k)]
        else:
            d = d.setdefault(k, {}) if isinstance(d, dict) else {}
    if isinstance(d, list) and keys[-1].isdigit() and int(keys[-1]) < len(d):
        d[int(keys[-1])] = value
    elif isinstance(d, dict):
        d[keys[-1]] = value


def parse_override(s: str) -> tuple[str, Any]:
    """'retrieval.depth=100' -> ('retrieval.depth', 100); values parsed as JSON when possible."""
    if "=" not in s:
        raise ValueError(f"override {s!r} is not KEY=VALUE")
    k, v = s.split("=", 1)
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v


def add_config_args(p) -> None:
    """Every command builds its RunConfig the same way: --config FILE plus --set KEY=VALUE."""
    p.add_argument("--config", help="run configuration (YAML or JSON)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set retrieval.depth=100 (repeatable)")
    p.add_argument("--work-dir", help="shortcut for --set work_dir=PATH")


def config_from_args(args, extra: dict | None = None) -> RunConfig:
    """RunConfig from --config, then --set, then `extra` overrides ({"section.key": value})."""
    overrides = dict(parse_override(s) for s in getattr(args, "overrides", []) or [])
    if getattr(args, "work_dir", None):
        overrides["work_dir"] = args.work_dir
    overrides.update(extra or {})
    return RunConfig.load(getattr(args, "config", None), overrides)
