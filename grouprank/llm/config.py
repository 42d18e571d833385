"""Configuration of the LLM client layer: endpoints and the answer cache."""
from __future__ import annotations

from pydantic import Field, model_validator

from grouprank.config_section import Section


class LLMEndpoint(Section):
    """One OpenAI-compatible endpoint as used by grouprank.llm.LLMClient (OpenAI, vLLM, SGLang,
    Ollama, llama.cpp server, or tests.support.fake_openai_server)."""
    name: str = "default"
    base_url: str | None = Field(None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    managed: str | None = Field(None, description="a local model grouprank serves itself instead of base_url: "
                                "smollm2, gemma3-270m or a .gguf path (grouprank.llm.managed: started on "
                                "127.0.0.1 on first use, once per process, stopped at exit)")
    managed_threads: int | None = Field(None, ge=1, description="managed server: CPU threads (default: the "
                                        "machine's cores, at most 8)")
    model: str = "local"
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the key")
    api_key_secret: str | None = Field(None, description="Prefect Secret block name (flows only)")
    max_concurrency: int = Field(16, ge=1, description="requests on the wire at once (per client)")
    timeout_s: float = Field(120.0, gt=0, description="per-call timeout (one HTTP attempt)")
    max_retries: int = Field(5, description="retries of 429/5xx/timeouts/connection errors/malformed responses")
    backoff_base_s: float = Field(0.5, description="retry n waits uniform(0, min(backoff_max_s, base*2**n))")
    backoff_max_s: float = 30.0
    retry_after_max_s: float = Field(120.0, description="cap on an honoured Retry-After header")
    parse_retries: int = Field(1, description="extra asks after an answer fails validation")
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 2048
    json_schema: bool = Field(False, description="send response_format json_schema (endpoint must support it)")
    logprobs: bool = Field(True, description="ask for top_logprobs where a judge uses them (pointwise: the grade "
                           "is the expected value over the grade tokens); turn off for an endpoint that rejects "
                           "the parameter")
    price_prompt_per_mtok: float = Field(0.0, description="USD per million prompt tokens (cost accounting)")
    price_completion_per_mtok: float = Field(0.0, description="USD per million completion tokens")

    @model_validator(mode="after")
    def _one_address(self):
        if self.base_url and self.managed:
            raise ValueError(f"llm endpoint {self.name!r}: give base_url (a server you run) or managed (a local "
                             "model grouprank serves), not both")
        return self


class LLMConfig(Section):
    endpoints: list[LLMEndpoint] = Field(default_factory=list)
    cache_path: str | None = Field(None, description="SQLite cache (default <work_dir>/llm_cache.sqlite)")
