"""The services a stage reaches through its `StageContext`, each built in one place from the run
configuration (distilabel's shape: the task gets its LLM): the LLM client of an endpoint
(`grouprank.llm.from_config`) and the reranker backend (`grouprank.reranker.inference`: the trained
model in process, or an LLM endpoint)."""
from __future__ import annotations


def build(ctx, key: tuple):
    kind, *rest = key
    if kind == "llm":
        endpoint, purpose, judge_id = rest
        from grouprank.llm.from_config import llm_client
        return llm_client(ctx.cfg, endpoint, who=purpose, stage=purpose, judge_id=judge_id, api_keys=ctx.api_keys)
    if kind == "reranker":
        return reranker_backend(ctx, rest[0])
    raise KeyError(f"no service {kind!r}")


def reranker_backend(ctx, model_path: str | None):
    """The in-process model at `model_path` (the trained reranker) or at `rerank.model_path` with
    the transformers backend; the LLM endpoint `rerank.endpoint` with the llm backend; None when
    neither is available (the `rerank` section's settings, the preset's layer included)."""
    from grouprank.reranker.inference import LLMBackend, transformers_backend
    cfg = ctx.cfg
    rc = cfg.rerank
    if model_path is not None or (rc.backend == "transformers" and rc.model_path):
        return transformers_backend(rc, model_path or rc.model_path)
    if rc.backend == "llm" and cfg.llm.endpoints:
        return LLMBackend(ctx.llm_client(rc.endpoint, purpose="reranker"), temperature=rc.temperature,
                          top_p=rc.top_p, max_tokens=rc.max_tokens)
    return None
