"""A cache a cluster can share (issue 30, item 4): `llm.cache_mode: per_writer`. Each process appends
to its own file in the cache folder and reads every writer's file as one cache, so no two processes
write one SQLite file over a network filesystem, and a rerun sends no request already answered."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grouprank.config import LLMEndpoint, RunConfig
from grouprank.llm import LLMClient, LLMRequest
from grouprank.llm.cache import LLMCache
from grouprank.llm.from_config import cache_path, llm_client
from grouprank.llm.shared_cache import SegmentCache, open_cache
from tests.support.fake_openai_server import start_local_server

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parents[1]
K = [f"{i:064x}" for i in range(6)]

# one writer process: the run's client (llm.from_config) judges prompts [lo, hi) and exits
WRITER = r"""
import json, sys
from grouprank.config import LLMEndpoint, RunConfig
from grouprank.llm import LLMRequest
from grouprank.llm.from_config import llm_client
cfg = RunConfig.model_validate(json.loads(sys.argv[1]))
lo, hi = int(sys.argv[2]), int(sys.argv[3])
client = llm_client(cfg, None, who="test", stage="judges")
reqs = [LLMRequest(messages=[{"role": "user", "content": f"prompt {i}"}], template_version="t@1") for i in range(lo, hi)]
res = client.map(reqs)
client.close()
print(json.dumps({"ok": sum(r.ok for r in res), "cached": sum(r.cached for r in res), "file": str(client.cache.own)}))
"""


def _reqs(lo: int, hi: int) -> list[LLMRequest]:
    return [LLMRequest(messages=[{"role": "user", "content": f"prompt {i}"}], template_version="t@1")
            for i in range(lo, hi)]


def _cfg(tmp_path, url) -> dict:
    return {"work_dir": str(tmp_path / "work"), "llm": {"cache_mode": "per_writer", "endpoints": [
        {"name": "e", "base_url": url, "model": "m", "max_concurrency": 4}]}}


def test_two_writer_processes_then_a_rerun_sends_nothing(tmp_path):
    """Two processes judge overlapping ranges at the same time, each through its own file; a third
    finds every answer (0 requests to the server), and so does a SegmentCache opened afresh."""
    with start_local_server("echo", latency_ms=20) as srv:
        cfgd = _cfg(tmp_path, srv.base_url)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        procs = [subprocess.Popen([sys.executable, "-c", WRITER, json.dumps(cfgd), lo, hi], cwd=REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for lo, hi in (("0", "150"), ("100", "250"))]
        outs = []
        for p in procs:
            o, e = p.communicate(timeout=120)
            assert p.returncode == 0, e[-2000:]
            outs.append(json.loads(o.strip().splitlines()[-1]))
        assert [o["ok"] for o in outs] == [150, 150]
        folder = tmp_path / "work" / "llm_cache.d"
        files = sorted(folder.glob("*.jsonl"))
        assert sorted(map(str, files)) == sorted(o["file"] for o in outs)   # one file per writer, its own
        pids = {str(p.pid) for p in procs}
        assert {f.name.split("-")[-2] for f in files} == pids
        lines = [ln for f in files for ln in f.read_bytes().splitlines()]
        assert 250 <= len(lines) <= 300 and len({json.loads(ln)["k"] for ln in lines}) == 250
        srv.reset()
        cfg = RunConfig.model_validate(cfgd)
        assert cache_path(cfg) == folder
        client = llm_client(cfg, None, who="test", stage="judges")
        res = client.map(_reqs(0, 250))
        assert all(r.ok and r.cached for r in res) and srv.stats(detail=False)["requests"] == 0
        assert not client.cache.own.exists()          # a reader that stored nothing leaves no file
        client.close()
        assert len(SegmentCache(folder)) == 250


def test_a_killed_writer_keeps_what_it_stored_and_a_torn_line_waits(tmp_path, caplog):
    folder = tmp_path / "c.d"
    w = SegmentCache(folder)
    w.put(K[0], "zero", 3, 1, "stop", logprobs=[["a", -0.1, []]])
    w.put(K[1], "one")
    w.put(K[1], "one again")                         # the first answer stays, as INSERT OR IGNORE
    # no close(): a writer killed by SIGKILL; another writer's line half-written
    other = folder / "otherhost-1-abcd.jsonl"
    full = json.dumps({"k": K[2], "t": "two"}, separators=(",", ":")).encode()
    other.write_bytes(full[:20])
    r = SegmentCache(folder)
    got = r.get_many(K[:3])
    assert got[K[0]].text == "zero" and got[K[0]].prompt_tokens == 3 and got[K[0]].logprobs == [["a", -0.1, []]]
    assert got[K[1]].text == "one" and K[2] not in got
    with open(other, "ab") as f:                      # the line completes: the next lookup finds it
        f.write(full[20:] + b"\n" + b"not a cache line\n")
    caplog.set_level(logging.WARNING)
    assert r.get(K[2]).text == "two"
    assert "otherhost-1-abcd.jsonl line 2 is not a cache line" in caplog.text
    # the clients of one process share its file (one file per process), and see each other's answers
    assert sorted(f.name for f in folder.glob("*.jsonl")) == sorted([w.own.name, other.name]) and r.own == w.own
    w.put(K[5], "five")
    assert r.get(K[5]).text == "five"
    r.delete(K[0])
    assert r.get(K[0]) is None and K[0] not in SegmentCache(folder).keys()
    r.put(K[0], "zero again")                          # stored again after its deletion: found by every reader
    assert SegmentCache(folder).get(K[0]).text == "zero again"
    w.close()
    r.close()


def test_per_writer_reads_a_single_file_cache_and_never_writes_it(tmp_path):
    old = LLMCache(tmp_path / "work" / "llm_cache.sqlite")
    old.put(K[3], "from sqlite", 5, 2)
    old.close()
    before = (tmp_path / "work" / "llm_cache.sqlite").read_bytes()
    c = open_cache(tmp_path / "work" / "llm_cache.d", "per_writer")
    assert isinstance(c, SegmentCache) and c.get(K[3]).text == "from sqlite" and K[3] in c.keys()
    c.put(K[4], "new")
    c.close()
    assert (tmp_path / "work" / "llm_cache.sqlite").read_bytes() == before
    assert isinstance(open_cache(tmp_path / "work" / "llm_cache.d"), SegmentCache)   # a folder: per_writer
    assert isinstance(open_cache(tmp_path / "x.sqlite"), LLMCache)
    with pytest.raises(ValueError, match="sha256"):
        SegmentCache(tmp_path / "y").put("short", "x")


def test_single_file_stays_the_default(tmp_path):
    cfg = RunConfig.model_validate({"work_dir": str(tmp_path / "w")})
    assert cfg.llm.cache_mode == "single_file" and cache_path(cfg) == tmp_path / "w" / "llm_cache.sqlite"
    c = LLMClient(LLMEndpoint(base_url="http://127.0.0.1:1/v1"), cache_path=cache_path(cfg))
    assert isinstance(c.cache, LLMCache)
    c.close()


def test_the_dry_run_counts_answers_of_every_writer(tmp_path):
    """`estimate` (the judge stage's dry run) reads the per_writer folder, and the single_file cache
    beside a folder not made yet."""
    from grouprank.llm import estimate
    from grouprank.llm.keys import request_hash
    ep = LLMEndpoint(base_url="http://127.0.0.1:1/v1")
    reqs = _reqs(0, 4)
    old = LLMCache(tmp_path / "llm_cache.sqlite")
    old.put(request_hash(reqs[0], ep), "a")
    old.close()
    assert estimate(reqs, ep, cache_path=tmp_path / "llm_cache.d", cache_mode="per_writer")["cached"] == 1
    w = SegmentCache(tmp_path / "llm_cache.d")
    w.put(request_hash(reqs[1], ep), "b")
    w.close()
    assert estimate(reqs, ep, cache_path=tmp_path / "llm_cache.d", cache_mode="per_writer")["calls"] == 2


def test_a_forked_child_writes_its_own_file(tmp_path):
    """A cache opened before a fork (a worker pool that forks): the child appends to a file of its own."""
    c = SegmentCache(tmp_path / "c.d")
    c.put(K[0], "parent")
    pid = os.fork()
    if pid == 0:  # the child: store one answer and leave at once
        try:
            c.put(K[1], "child")
            os._exit(0)
        except BaseException:  # noqa: BLE001
            os._exit(2)
    assert os.waitpid(pid, 0)[1] == 0
    files = sorted((tmp_path / "c.d").glob("*.jsonl"))
    assert len(files) == 2 and {f.name.split("-")[-2] for f in files} == {str(os.getpid()), str(pid)}
    assert c.get(K[1]).text == "child"
    c.close()


def test_caches_of_one_folder_in_a_process_share_what_was_read(tmp_path, monkeypatch):
    """A judge client per judge and per shard opens the folder again: the files are read once per
    process (then only what was appended), and an answer one cache stores the other sees at once."""
    import hashlib

    from grouprank.llm import shared_cache
    folder = tmp_path / "llm_cache.d"
    other = SegmentCache(folder)
    key = hashlib.sha256(b"q").hexdigest()
    other.put(key, "answer one")
    other.close()  # another writer's file, already on disk
    reads = []  # files opened to read them
    monkeypatch.setattr(shared_cache, "open", lambda path, *a, **k: (reads.append(path), open(path, *a, **k))[1],
                        raising=False)
    a = SegmentCache(folder)
    n = len(reads)
    b = SegmentCache(folder)
    assert a.get(key).text == b.get(key).text == "answer one"
    key2 = hashlib.sha256(b"q2").hexdigest()
    a.put(key2, "answer two")
    assert b.get(key2).text == "answer two"
    assert n == 1 and len(reads) == n  # b read nothing again; hits need no refresh
    a.close()
    assert b.get(key).text == "answer one"  # closing one cache leaves the other usable
    b.close()
    assert (os.getpid(), str(folder)) not in shared_cache._INDEXES
