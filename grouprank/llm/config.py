"""Configuration of the LLM client layer: endpoints and the answer cache."""
from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from grouprank.config_section import Section


class LLMEndpoint(Section):
    """One OpenAI-compatible endpoint as used by grouprank.llm.LLMClient (OpenAI, vLLM, SGLang,
    Ollama, llama.cpp server, or tests.support.fake_openai_server). Credentials never live here: the
    key comes from the environment variable `api_key_env` or the Prefect Secret block `api_key_secret`;
    a base_url loses its user-info and query string (grouprank.redact); errors never echo values."""
    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)
    name: str = "default"
    base_url: str | None = Field(None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    replicas: list[str] | None = Field(None, description="instead of base_url: the base URLs of several servers "
                                       "of one model (vLLM / SGLang replicas); each request goes to the replica "
                                       "with the fewest requests in flight, a replica whose circuit breaker opens "
                                       "is taken out and its requests go to the others. max_concurrency, "
                                       "breaker_failures and preflight apply per replica; answers are cached under "
                                       "the endpoint's name, not a URL (a rerun on other replicas pays nothing twice)")
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
    json_schema: bool | Literal["json_object"] = Field(
        False, description="constrain answers to the template's JSON schema: true sends response_format "
        "{type: json_schema} (OpenAI, vLLM, SGLang, Ollama, llama.cpp's llama-server); json_object sends "
        "{type: json_object, schema} (llama-cpp-python's server, which answers HTTP 500 to json_schema)")
    logprobs: bool = Field(True, description="ask for top_logprobs where a judge uses them (pointwise: the grade "
                           "is the expected value over the grade tokens); turn off for an endpoint that rejects "
                           "the parameter")
    price_prompt_per_mtok: float = Field(0.0, description="USD per million prompt tokens (cost accounting)")
    price_completion_per_mtok: float = Field(0.0, description="USD per million completion tokens")
    preflight: bool = Field(True, description="before the first request that is not answered from the cache, "
                            "one cheap GET <base_url>/models: an endpoint that cannot be reached (or rejects "
                            "the key) fails the stage within seconds, naming the endpoint and the reason")
    preflight_timeout_s: float = Field(5.0, gt=0, description="time limit of the preflight request")
    breaker_failures: int = Field(10, ge=0, description="circuit breaker: after this many consecutive "
                                  "connection failures or timeouts (no HTTP answer at all) the client stops "
                                  "sending and the stage fails with a summary naming the endpoint; 0: off")
    time_budget_s: float | None = Field(None, gt=0, description="wall-clock budget of one client (one stage's "
                                        "requests to this endpoint), counted from its first uncached request: "
                                        "once spent, attempts in flight are cut, nothing more is sent and the "
                                        "stage fails with a summary naming the endpoint (answers received are "
                                        "cached; a rerun resumes). None: bounded by the breaker and retries only")

    @model_validator(mode="before")
    @classmethod
    def _hide_refused(cls, data):
        """A key typed into api_key_env / api_key_secret, or given under a credential-like key (api_key,
        token, ...), is replaced by a placeholder before validation, so that no error report (not
        even one built from ValidationError.errors(), which keeps the input) can show it."""
        if not isinstance(data, dict):
            return data
        from grouprank.redact import HIDDEN, check_block_name, check_env_name, is_secret_key
        out = dict(data)
        for k, check in (("api_key_env", check_env_name), ("api_key_secret", check_block_name)):
            v = out.get(k)
            if isinstance(v, str):
                try:
                    check(v, k)
                except ValueError:
                    out[k] = HIDDEN
            elif v is not None:
                out[k] = HIDDEN
        for k in list(out):
            if k not in cls.model_fields and is_secret_key(k):
                out[k] = HIDDEN
        return out

    @field_validator("base_url")
    @classmethod
    def _clean_base_url(cls, v, info):
        from grouprank.redact import clean_url_field
        return clean_url_field(v, "llm endpoint base_url")

    @field_validator("replicas")
    @classmethod
    def _clean_replicas(cls, v):
        if v is None:
            return None
        from grouprank.redact import clean_url_field
        out = [clean_url_field(u, f"llm endpoint replicas[{i}]") for i, u in enumerate(v)]
        if not out or any(not u for u in out):
            raise ValueError("llm endpoint replicas: give one base URL or more, none empty")
        if len(set(u.rstrip("/") for u in out)) != len(out):
            raise ValueError("llm endpoint replicas: a base URL is listed twice")
        return out

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v):
        from grouprank.redact import check_env_name
        return check_env_name(v, "llm endpoint api_key_env")

    @field_validator("api_key_secret")
    @classmethod
    def _block_name(cls, v):
        from grouprank.redact import check_block_name
        return check_block_name(v, "llm endpoint api_key_secret")

    @model_validator(mode="after")
    def _one_address(self):
        given = [k for k in ("base_url", "replicas", "managed") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"llm endpoint {self.name!r}: give one of base_url (a server you run), replicas "
                             "(several servers of one model) or managed (a local model grouprank serves), "
                             f"not {'both' if len(given) == 2 else 'all of'} {' and '.join(given)}")
        return self


class LLMConfig(Section):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)
    endpoints: list[LLMEndpoint] = Field(default_factory=list)
    cache_path: str | None = Field(None, description="the answer cache: a SQLite file (single_file, default "
                                   "<work_dir>/llm_cache.sqlite) or a folder of per-writer files (per_writer, "
                                   "default <work_dir>/llm_cache.d)")
    cache_mode: Literal["single_file", "per_writer"] = Field(
        "single_file", description="single_file: one SQLite file (WAL), safe for several processes on one "
        "machine, NOT on a network filesystem shared by several machines; per_writer: every process appends "
        "its answers to its own file in the cache folder (named by host, pid and a random tag) and reads "
        "all of them as one cache, so a cluster can share the work dir; a single_file cache found at "
        "<work_dir>/llm_cache.sqlite is read too (never written)")
