"""Repeated library warnings summarised per stage (grouprank.log_summary): the first few of a kind
shown, the rest counted in one line at the end; other kinds, levels and loggers untouched."""
from __future__ import annotations

import io
import logging

from grouprank.log_summary import summarised_warnings


def test_repeated_warnings_are_summarised_per_scope():
    buf = io.StringIO()
    h = logging.StreamHandler(buf)
    root = logging.getLogger()
    root.addHandler(h)
    lg = logging.getLogger("grouprank.llm.client")
    other = logging.getLogger("somebody.else")
    try:
        with summarised_warnings("stage judge", keep=2):
            for i in range(7):
                lg.warning("LLM request %s failed (%s): %s", f"k{i}", "pw", "no grade in the answer")
            lg.warning("a different warning %d", 1)
            lg.error("an error %d", 1)
            for i in range(3):
                other.warning("not ours %d", i)
        lg.warning("LLM request %s failed (%s): %s", "after", "pw", "x")  # outside: shown
    finally:
        root.removeHandler(h)
    lines = buf.getvalue().splitlines()
    shown = [x for x in lines if x.startswith("LLM request")]
    assert shown == ["LLM request k0 failed (pw): no grade in the answer",
                     "LLM request k1 failed (pw): no grade in the answer",
                     "LLM request after failed (pw): x"]
    assert "a different warning 1" in lines and "an error 1" in lines
    assert sum(x.startswith("not ours") for x in lines) == 3
    assert ("stage judge: 5 more warning(s) like 'LLM request %s failed (%s): %s' not shown "
            "(the first 2 of that kind were)") in lines
    assert all(h.filters == [] for h in root.handlers)  # nothing left behind
