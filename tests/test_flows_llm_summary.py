"""The run summary names the LLM endpoints (never a URL) and counts each stage's LLM calls."""
from __future__ import annotations

from grouprank.executor import llm_summary
from grouprank.config import RunConfig


def test_llm_summary_counts_calls_per_stage_and_hides_urls():
    cfg = RunConfig.model_validate({"llm": {"endpoints": [
        {"name": "local", "managed": "smollm2", "model": "SmolLM2-135M-Instruct"},
        {"name": "remote", "base_url": "http://127.0.0.1:9/v1", "model": "big"}]}})
    # the runner core records each stage's LLM calls apart from its stats (`record["llm"]`): a stat
    # named like a count ("calls") is not one
    stages = {"load": {"stats": {"documents": 5, "x.calls": 99}, "llm": {"calls": 0, "cached_calls": 0}},
              "mine_queries": {"stats": {"kept": 700}, "llm": {"calls": 36, "cached_calls": 4}},
              "judge": {"stats": {"smollm2.pairs_ok": 9}, "llm": {"calls": 150, "cached_calls": 2}},
              "evaluate": {"state": "Failed"}}
    s = llm_summary(cfg, stages)
    assert s["stages"] == {"mine_queries": {"calls": 36, "cached_calls": 4},
                           "judge": {"calls": 150, "cached_calls": 2}}
    assert s["calls"] == 186 and s["cached_calls"] == 6
    assert s["endpoints"][0] == {"name": "local", "model": "SmolLM2-135M-Instruct", "managed": "smollm2"}
    assert "127.0.0.1" not in repr(s)
