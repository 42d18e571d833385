"""The LLM client of a run, built from its configuration in one place: which endpoint a consumer
talks to (its own `endpoint` setting, else the first of `llm.endpoints`; an endpoint with `replicas`
spreads its requests over them) and where answers are cached (`cache_path`, `llm.cache_mode`,
shared by every stage so a rerun never pays for a call twice). Judges, query generation, evaluation and `grouprank rerank` use it."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from grouprank.errors import UserError


def cache_path(cfg) -> Path:
    """The run's LLM answer cache: `llm.cache_path`, else `<work_dir>/llm_cache.sqlite` (single_file)
    or the folder `<work_dir>/llm_cache.d` (per_writer: one file per writer process, for a cluster)."""
    if cfg.llm.cache_path:
        return Path(cfg.llm.cache_path)
    return cfg.work_path / ("llm_cache.d" if cfg.llm.cache_mode == "per_writer" else "llm_cache.sqlite")


def choose_endpoint(cfg, name: str | None, who: str, hint: str = ""):
    """The endpoint called `name`, or the first configured one when `name` is None; a UserError
    naming `who` (e.g. "judge 'pw'") when there is none or no such name."""
    if not cfg.llm.endpoints:
        raise UserError(f"{who} needs an LLM endpoint, but llm.endpoints is empty: add one "
                        f"(an OpenAI-compatible base_url and model){hint}")
    if name is None:
        return cfg.llm.endpoints[0]
    try:
        return cfg.endpoint(name)
    except KeyError as e:
        raise UserError(f"{who}: {str(e).strip(chr(34))}") from None


def llm_client(cfg, endpoint_name: str | None, *, who: str, stage: str, judge_id: str | None = None,
               api_keys: Mapping | None = None, hint: str = "", endpoint=None):
    """An `LLMClient` on the chosen endpoint (or on `endpoint`, given outright) with the run's cache;
    `stage`/`judge_id`: accounting; `api_keys`: endpoint name -> key (e.g. Prefect Secrets; default:
    the endpoint's `api_key_env`)."""
    from .client import LLMClient
    ep = endpoint if endpoint is not None else choose_endpoint(cfg, endpoint_name, who, hint)
    return LLMClient(ep, cache_path=cache_path(cfg), stage=stage, judge_id=judge_id,
                     api_key=(api_keys or {}).get(ep.name), cache_mode=cfg.llm.cache_mode)
