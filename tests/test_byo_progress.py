"""Progress of long work: a log line with counts, rate and ETA at most every `every_s` seconds (and at the
start and the end), the stage callback at most every few seconds."""
import logging

from grouprank.progress import LoggingProgress, Progress, fmt_duration


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_periodic_lines_with_counts_and_eta():
    clock, calls = Clock(), []
    p = Progress("encode docs", 1000, unit="docs", every_s=30, callback=lambda d, n: calls.append((d, n)),
                 callback_every_s=2, clock=clock, bar=False)
    for _ in range(100):  # 10 docs per second for 100 s
        clock.t += 1
        p.update(10)
    p.close()
    # the start line, one line every 30 s (t = 30, 60, 90), the final line
    assert p.lines[0] == "encode docs: starting, 1,000 docs"
    mid = p.lines[1:-1]
    assert len(mid) == 3
    assert mid[0] == "encode docs: 300/1,000 docs (30.0%), 10.0 docs/s, elapsed 30s, ETA 1m10s"
    assert p.lines[-1].startswith("encode docs: 1,000/1,000 docs (100.0%)") and "ETA" not in p.lines[-1]
    # the callback: every 2 s, and at the end
    assert calls[0] == (20, 1000) and calls[-1] == (1000, 1000) and 50 <= len(calls) <= 52


def test_logging_progress_logs_per_part_and_forwards(caplog):
    caplog.set_level(logging.INFO, logger="grouprank.progress")
    seen = []
    lp = LoggingProgress("judge", lambda *a: seen.append(a), unit="requests", every_s=0, quiet_parts={"local"})
    lp("pointwise", 5, 10)
    lp("pointwise", 10, 10)
    lp("local", 3, 10)
    assert seen == [("pointwise", 5, 10), ("pointwise", 10, 10), ("local", 3, 10)]
    msgs = [r.getMessage() for r in caplog.records]
    assert "judge pointwise: starting, 10 requests" in msgs
    assert any(m.startswith("judge pointwise: 10/10 requests (100.0%)") for m in msgs)
    assert not any("local" in m for m in msgs)


def test_fmt_duration():
    assert [fmt_duration(x) for x in (5, 75, 3 * 3600 + 120)] == ["5s", "1m15s", "3h02m"]


def test_heartbeat_logs_while_one_long_step_runs():
    """A training step (or an LLM call) longer than every_s: with heartbeat the line still comes every
    every_s; without it, nothing between the start and the first update; none after close."""
    import time
    quiet = Progress("grpo", 4, unit="steps", every_s=0.2, bar=False)
    beat = Progress("grpo", 4, unit="steps", every_s=0.2, bar=False, heartbeat=True)
    time.sleep(0.9)  # one long step
    assert len(quiet.lines) == 1
    assert len(beat.lines) >= 3 and all(x.startswith("grpo: 0/4 steps (0.0%)") for x in beat.lines[1:])
    beat.update(1)
    beat.close()
    n = len(beat.lines)
    time.sleep(0.5)
    assert len(beat.lines) == n and beat.lines[-1].startswith("grpo: 1/4 steps (25.0%)")
    quiet.close()


def test_heartbeat_lines_carry_the_creators_context_and_the_step_time(caplog):
    """The heartbeat thread runs in a copy of its creator's contextvars context (so an orchestrator's
    run context, e.g. Prefect's task run, reaches its log records) and says how long the step runs."""
    import contextvars
    import time
    caplog.set_level(logging.INFO, logger="grouprank.progress")
    run = contextvars.ContextVar("run", default=None)
    seen = []

    class Grab(logging.Handler):
        def emit(self, record):
            seen.append((record.threadName, run.get(), record.getMessage()))

    h = Grab()
    logging.getLogger("grouprank.progress").addHandler(h)
    try:
        run.set("task-run-7")
        p = Progress("grpo", 4, unit="steps", every_s=0.2, bar=False, heartbeat=True)
        time.sleep(0.7)
        p.close()
    finally:
        logging.getLogger("grouprank.progress").removeHandler(h)
    beats = [s for s in seen if s[0] == "progress:grpo"]
    assert beats and all(ctx == "task-run-7" for _, ctx, _ in beats)
    assert all(", step running for " in m for _, _, m in beats)
    assert "step running" not in seen[-1][2]  # the closing line is no heartbeat


def test_reporting_sink_gets_progress_without_a_callback():
    from grouprank.progress import reporting
    got = []
    with reporting(lambda label, d, n: got.append((label, d, n))):
        p = Progress("reranker GRPO", 3, unit="steps", every_s=0, callback_every_s=0, bar=False)
        p.update(1)
        own = Progress("judge", 2, callback=lambda d, n: got.append(("own", d, n)), callback_every_s=0, bar=False)
        own.update(2)
        p.close()
    assert ("reranker GRPO", 1, 3) in got and ("reranker GRPO", 1, 3) == got[0]
    assert ("own", 2, 2) in got and not any(g[0] == "judge" for g in got)
