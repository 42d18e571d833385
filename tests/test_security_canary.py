"""Redaction by construction (issue 18, item 1): canary secrets planted in every configuration field
that could carry one appear nowhere a run writes or prints.

Planted: user-info and a query-string key in the LLM endpoint's base_url, a `hub_token` (and a
nested `token`) in reranker.sft_args, a `push_to_hub_token` in grpo_args, the API key in the
environment. Refused, with an error that does not repeat it: a key typed into api_key_env, a key
given as `api_key`. Grepped: every file under the work dir (export folder with its dataset card,
run summary, stage records, Parquet metadata, reports, caches), captured stdout/stderr and log
records; `test_prefect_database_holds_no_canary` greps Prefect's database after a flow run."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grouprank.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
C_USER, C_PASS, C_QUERY = "canaryuserQ7", "CANARYpassW0rd9x", "CANARYqueryKEY3c1d"
C_HUB, C_NESTED, C_GRPO = "hf_CANARYhubTOKEN0123456789abcdefAB", "CANARYnestedTOKENz8", "CANARYgrpoTOKENy7"
C_ENV = "sk-CANARYenvKEY0123456789abcdefghij"
C_TYPED = "sk-CANARYtypedKEY0123456789abcdefgh"
C_MODEL = "sk-proj-CANARYmodelKEY0123456789abcd"  # a key pasted into `model` (issue 27, item 7)
CANARIES = [C_USER, C_PASS, C_QUERY, C_HUB, C_NESTED, C_GRPO, C_ENV, C_TYPED, C_MODEL]


def planted(cfg: dict, base_url: str) -> dict:
    """`cfg` with the canaries in every credential-capable field that is accepted (and cleaned)."""
    host = base_url.split("://", 1)[1]
    cfg = json.loads(json.dumps(cfg))
    cfg["llm"] = {"endpoints": [{"name": "local", "base_url": f"http://{C_USER}:{C_PASS}@{host}?api-key={C_QUERY}",
                                 "model": C_MODEL, "max_retries": 1, "timeout_s": 10, "max_concurrency": 4,
                                 "backoff_base_s": 0.01, "backoff_max_s": 0.02}]}
    cfg["judges"] = {"judges": [{"id": "local", "kind": "local"},
                                {"id": "llm", "kind": "pointwise", "endpoint": "local"}]}
    cfg["reranker"] = {**cfg.get("reranker", {}),
                       "sft_args": {"hub_token": C_HUB, "logging_steps": 1, "model_init_kwargs": {"token": C_NESTED}},
                       "grpo_args": {"push_to_hub_token": C_GRPO}}
    return cfg


def hits(root: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            for c in CANARIES:
                if c.encode() in data:
                    found.setdefault(str(p.relative_to(root)), []).append(c)
    return found


def small(work: Path) -> dict:
    from tests.support.prefect_local import small_config
    cfg = small_config(work, None, name="canary")
    cfg["queries"]["max_queries"] = 4
    cfg["retrieval"].update(depth=20, pool_top=4, pool_sampled=2, pool_sample_from=[5, 20])
    return cfg


@pytest.mark.timeout(300)
def test_no_canary_in_export_summary_records_or_logs(tmp_path, caplog, capfd, monkeypatch):
    from grouprank.executor import run_pipeline
    from tests.support.fake_openai_server import start_local_server
    monkeypatch.setenv("OPENAI_API_KEY", C_ENV)
    caplog.set_level(logging.DEBUG)
    work = tmp_path / "work"
    lines: list[str] = []
    with start_local_server("echo") as srv:
        cfg = RunConfig.model_validate(planted(small(work), srv.base_url))
        # cleaned on load: the address works without its credentials
        assert cfg.llm.endpoints[0].base_url == srv.base_url
        assert "hub_token" not in cfg.reranker.sft_args and cfg.reranker.sft_args["logging_steps"] == 1
        assert cfg.llm.endpoints[0].model == "***"  # masked on load: judgments, reports, cache, card see ***
        summary = run_pipeline(cfg, ["export"], log_fn=lines.append)
        requests = srv.stats(detail=False)["requests"]
    assert requests > 0  # the LLM judge really used the endpoint
    export = Path(summary["stages"]["export"]["outputs"]["export"])
    card = (export / "README.md").read_text()
    assert '"sft_args"' in card and '"logging_steps": 1' in card  # the configuration is in the card...
    assert hits(work) == {}  # ...and no canary anywhere under the work dir (export, summary, records)
    out, err = capfd.readouterr()
    logged = "\n".join(r.getMessage() for r in caplog.records) + "\n".join(lines) + json.dumps(summary, default=str)
    assert [c for c in CANARIES if c in out + err + logged] == []
    # the warnings say what was removed, by name
    assert "reranker.sft_args.hub_token: dropped" in logged and "removed the URL's user-info and query" in logged
    assert "llm.endpoints.0.model: a value shaped like an API key was masked" in logged
    # the card's judges table names the (masked) model of the LLM judge
    assert any("pointwise" in ln and "***" in ln for ln in card.splitlines()), card[:3000]


@pytest.mark.timeout(120)
def test_a_key_set_on_the_command_line_without_a_config_file_is_not_printed(tmp_path):
    """`--set llm.endpoints.0.api_key=sk-...` with no --config: the error names the key path, never
    the value (8a543dc printed `llm.endpoints = {'0': {'api_key': 'sk-...'}}`)."""
    for arg in (f"llm.endpoints.0.api_key={C_TYPED}", f"llm.endpoints.0.model={C_TYPED}",
                f"judges.judges.0.id={C_TYPED}"):
        p = _cli(["load", "--work-dir", str(tmp_path / "w"), "--set", arg])
        assert p.returncode != 0, p.stdout[-2000:]
        assert "llm.endpoints" in p.stderr or "judges.judges" in p.stderr, p.stderr[-2000:]
        assert C_TYPED not in p.stderr + p.stdout, p.stderr[-2000:]


def _cli(args: list[str], env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "grouprank.cli", *args], cwd=REPO, env=e, capture_output=True,
                           text=True, timeout=timeout)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("endpoint", [{"name": "e", "base_url": "http://127.0.0.1:9/v1", "api_key_env": C_TYPED},
                                      {"name": "e", "base_url": "http://127.0.0.1:9/v1", "api_key": C_TYPED},
                                      {"name": "e", "base_url": "http://127.0.0.1:9/v1", "api_key_secret": C_TYPED}])
def test_a_key_in_the_wrong_field_is_refused_without_echo(tmp_path, endpoint):
    """Through the CLI (the path a user takes): the configuration is refused, naming the field, and
    neither stderr nor stdout repeats the key (pydantic's input echo is off)."""
    p = _cli(["load", "--work-dir", str(tmp_path / "w"), "--set", f"llm.endpoints={json.dumps([endpoint])}"])
    assert p.returncode != 0
    field = next(k for k in endpoint if k not in ("name", "base_url"))
    assert field in p.stderr, p.stderr[-2000:]
    assert C_TYPED not in p.stderr + p.stdout, p.stderr[-2000:]
    assert not (tmp_path / "w").exists() or hits(tmp_path / "w") == {}


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_prefect_database_holds_no_canary(tmp_path):
    """A flow run in Prefect's ephemeral mode (fresh PREFECT_HOME, SQLite) with the canaries planted:
    the flow run's parameters, task records and logs in the database hold none of them."""
    from tests.support.fake_openai_server import start_local_server
    work = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(tmp_path / "prefect_home"), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "OPENAI_API_KEY": C_ENV})
    with start_local_server("echo") as srv:
        conf = tmp_path / "cfg.json"
        conf.write_text(json.dumps(planted(small(work), srv.base_url)))
        r = subprocess.run([sys.executable, "-m", "flows", "load", "--config", str(conf)], cwd=str(REPO), env=env,
                           capture_output=True, text=True, timeout=380)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    home = tmp_path / "prefect_home"
    assert any(p.suffix == ".db" for p in home.rglob("*")), "no Prefect database was written"
    # the flow run's parameters (the whole configuration) are in the database: cleaned
    assert any(b"logging_steps" in p.read_bytes() for p in home.rglob("*") if p.is_file())
    assert hits(home) == {} and hits(work) == {}
    assert [c for c in CANARIES if c in r.stdout + r.stderr] == []
