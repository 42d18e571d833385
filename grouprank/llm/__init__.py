"""The one LLM client layer: every LLM call in grouprank goes through `LLMClient`.

    from grouprank.llm import LLMClient, LLMRequest
    client = LLMClient(endpoint, cache_path="work/llm_cache.sqlite", stage="judges", judge_id="pw")
    results = client.map([LLMRequest(messages=[...], template_version="judge.pointwise@1",
                                     validate=my_parser, tag="pointwise")])

- `openai.AsyncOpenAI` against any OpenAI-compatible endpoint (base_url from the endpoint config),
  its own retries off (max_retries=0); this layer retries 429 / 5xx / timeouts / connection errors /
  malformed responses with exponential backoff + full jitter, honouring Retry-After.
- bounded concurrency (endpoint.max_concurrency), per-call timeout (endpoint.timeout_s).
- persistent content-addressed cache keyed by sha256 of (base_url, model, messages, sampling
  params, response_schema, template_version); only validated answers are stored, each committed as
  it arrives: one SQLite file (WAL) that several processes on one machine may share, or, for a
  cluster on a shared filesystem, a folder with one append-only file per writer process read as one
  (`llm.cache_mode: per_writer`, `shared_cache`).
- replicas: an endpoint with `replicas: [url, ...]` sends each request to the replica with the fewest
  in flight; a replica whose breaker opens is taken out and the others take its requests
  (`replicas`); its answers are cached under `replicas:<endpoint name>`, not a URL.
- token and cost accounting per tag / stage / judge (`usage()`, `usage_report()`).
- failures are returned as LLMResult(status="failed", error=reason), never raised; the API key is
  scrubbed from every recorded message.
- `estimate()` is the dry run: calls, prompt tokens, cost, before anything is sent.
- tolerant parsing helpers in `grouprank.llm.parsing` (extract_json, extract_tag).
- `tests.support.fake_openai_server`: a real local OpenAI-compatible HTTP server with fault injection.
- a managed local endpoint: an endpoint `{name: local, managed: smollm2}` (no base_url) makes the
  client start llama-cpp-python's server with that model on 127.0.0.1 on first use (`managed`:
  once per process, health-checked, stopped at exit; `grouprank llm serve|stop|status`);
  `local_models.model_path(name)` finds the GGUF files (SmolLM2-135M-Instruct, Gemma 3 270M).
- log-probabilities: a request with `top_logprobs` gets them back in `LLMResult.logprobs` (cached too).

Modules: `client` (LLMClient), `from_config` (a run's client: endpoint choice and cache path, the
one constructor stages use), `guard` (preflight, circuit breaker, time budget), `keys`
(request_hash: the cache key), `cache` (SQLite answers), `transport` (connection pools per event
loop, one HTTP attempt), `retry` (what is retried, backoff),
`shared_cache` (per-writer answer files, `open_cache`), `replicas` (several servers of one endpoint),
`usage` (accounting, usage_report), `dry_run` (estimate), `parsing`, `types`, `config` (the
LLMEndpoint / LLMConfig section), `managed` (the local server), `local_models` (GGUF files).

This module imports no heavy dependency at import time (openai is imported on first call).
"""
from __future__ import annotations

from .types import LLMRequest, LLMResult, ParseError
from .parsing import extract_json, extract_tag, json_validator

__all__ = [
    "LLMRequest", "LLMResult", "ParseError", "LLMClient", "estimate", "usage_report",
    "request_hash", "sampling_params", "extract_json", "extract_tag", "json_validator", "LLMCache",
]

# name -> module (lazy: keep `import grouprank.llm` light)
_LAZY = {"LLMClient": "client", "estimate": "dry_run", "usage_report": "usage",
         "request_hash": "keys", "sampling_params": "keys", "LLMCache": "cache"}


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(name)
    import importlib
    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)
