"""The one constructor of a run's LLM client (`grouprank.llm.from_config`): which endpoint, which
cache, and the errors that name who needed the endpoint."""
from __future__ import annotations

import pytest

from grouprank.config import RunConfig
from grouprank.errors import UserError
from grouprank.llm.from_config import cache_path, choose_endpoint, llm_client

EPS = [{"name": "a", "base_url": "http://127.0.0.1:9/v1", "model": "ma"},
       {"name": "b", "base_url": "http://127.0.0.1:9/v1", "model": "mb"}]


def _cfg(tmp_path, **llm) -> RunConfig:
    return RunConfig.model_validate({"work_dir": str(tmp_path / "w"), "llm": {"endpoints": EPS, **llm}})


def test_endpoint_by_name_else_the_first(tmp_path):
    cfg = _cfg(tmp_path)
    assert choose_endpoint(cfg, None, "x").name == "a"
    assert choose_endpoint(cfg, "b", "x").name == "b"
    with pytest.raises(UserError, match=r"judge 'pw': no LLM endpoint named 'c'"):
        choose_endpoint(cfg, "c", "judge 'pw'")
    empty = RunConfig.model_validate({"work_dir": str(tmp_path / "w")})
    with pytest.raises(UserError, match=r"queries.generate needs an LLM endpoint, but llm.endpoints is empty.* or X"):
        choose_endpoint(empty, None, "queries.generate", " or X")


def test_the_client_uses_the_runs_cache_and_the_given_key(tmp_path):
    cfg = _cfg(tmp_path)
    assert cache_path(cfg) == tmp_path / "w" / "llm_cache.sqlite"
    client = llm_client(cfg, "b", who="evaluate", stage="evaluate", api_keys={"b": "sk-test-1234"})
    try:
        assert client.endpoint.model == "mb" and client.stage == "evaluate"
        assert client.cache is not None and client.cache.path == tmp_path / "w" / "llm_cache.sqlite"
        assert client.scrub("echo sk-test-1234") == "echo ***"          # the key from api_keys is the one used
    finally:
        client.close()
    other = _cfg(tmp_path, cache_path=str(tmp_path / "elsewhere.sqlite"))
    assert cache_path(other) == tmp_path / "elsewhere.sqlite"
