"""The services a stage reaches through its `StageContext`, each built in one place from the run
configuration (distilabel's shape: the task gets its LLM): the LLM client of an endpoint, and the
reranker backend (the trained model in process, or an LLM endpoint)."""
from __future__ import annotations

from pathlib import Path


def build(ctx, key: tuple):
    kind, *rest = key
    if kind == "llm":
        return llm_client(ctx.cfg, *rest, api_keys=ctx.api_keys)
    if kind == "reranker":
        return reranker_backend(ctx, rest[0])
    raise KeyError(f"no service {kind!r}")


def llm_cache_path(cfg) -> Path:
    """The run's LLM answer cache (`llm.cache_path`, default `<work_dir>/llm_cache.sqlite`)."""
    return Path(cfg.llm.cache_path) if cfg.llm.cache_path else cfg.work_path / "llm_cache.sqlite"


def llm_client(cfg, endpoint, purpose: str, judge_id: str | None = None, *,
               api_keys: dict[str, str] | None = None):
    """An LLM client with the run's answer cache: for the endpoint named `endpoint` (None: the first of
    `llm.endpoints`), or for an endpoint given as such (e.g. `grouprank rerank --base-url`)."""
    from grouprank.llm import LLMClient
    if endpoint is None and not cfg.llm.endpoints:
        from grouprank.errors import UserError
        raise UserError(f"{purpose} needs an LLM but llm.endpoints is empty: configure an "
                        "OpenAI-compatible endpoint (base_url, model)")
    if endpoint is None or isinstance(endpoint, str):
        ep = cfg.endpoint(endpoint) if endpoint else cfg.llm.endpoints[0]
    else:
        ep = endpoint
    return LLMClient(ep, cache_path=llm_cache_path(cfg), stage=purpose, judge_id=judge_id,
                     api_key=(api_keys or {}).get(ep.name))


def reranker_backend(ctx, model_path: str | None):
    """The in-process model at `model_path` (the trained reranker) or at `reranker.model_path` with
    the transformers backend; the LLM endpoint `reranker.endpoint` with the llm backend; None when
    neither is available. The effective settings (the preset's limits) apply."""
    from grouprank.reranker.config import effective
    from grouprank.reranker.inference import LLMBackend, TransformersBackend
    cfg = ctx.cfg
    rc = effective(cfg.reranker)
    if model_path is not None or (rc.backend == "transformers" and rc.model_path):
        return TransformersBackend.from_path(str(model_path or rc.model_path), max_new_tokens=rc.infer_max_tokens,
                                             temperature=rc.infer_temperature, top_p=rc.infer_top_p,
                                             batch_size=rc.infer_batch_size, dtype=rc.infer_dtype)
    if rc.backend == "llm" and cfg.llm.endpoints:
        return LLMBackend(ctx.llm_client(rc.endpoint, purpose="reranker"), temperature=rc.infer_temperature,
                          top_p=rc.infer_top_p, max_tokens=rc.infer_max_tokens)
    return None
