"""A local OpenAI-compatible LLM server that grouprank starts and stops itself.

    srv = ManagedServer("smollm2")          # a name of `local_models.MODELS` or a .gguf path
    url = srv.start()                       # http://127.0.0.1:<free port>/v1, health-checked
    ...
    srv.stop()

    url = ensure("smollm2")                 # once per process; stopped at exit (what LLMClient uses
                                            # for an endpoint `{name: local, managed: smollm2}`)

The server is llama-cpp-python's (`python -m llama_cpp.server --model FILE --host 127.0.0.1
--port P`), run in a child process through this module's own entry point
(`python -m grouprank.llm.managed --parent-pid PID -- <server args>`), which exits as soon as
the process that started it is gone, so a killed pipeline never leaves a server behind. The
server:

- listens on 127.0.0.1 only, on a free port picked at start;
- serves one sequence at a time (llama-cpp-python has no parallel slots: concurrent requests wait
  on its lock), with `n_threads` = the machine's cores (capped at 8; `threads` overrides), the
  context of the model's registry entry, and `logits_all` on so `top_logprobs` come back
  (log-probability grading, `grouprank.prompts.pointwise.expected_grade`). Keep two requests in
  flight at most (`LLMClient` caps a managed endpoint's `max_concurrency` at 2): more only wait on
  the lock against their own timeouts;
- is healthy once `GET /v1/models` answers 200; it writes its log to a file
  (`<log_dir>/llm_server_<model>.log`), whose tail is quoted when it cannot start.

`grouprank llm serve|stop|status` (`grouprank.commands.llm`) runs a detached one and records it
(pid, port, model, log) in `<state_dir>/<model>.json`; `ensure()` reuses such a recorded server
when it is alive and healthy instead of starting a second copy of the model.
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from grouprank.errors import UserError

from . import local_models

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 180.0


def state_dir() -> Path:
    """$GROUPRANK_STATE_DIR, else ~/.cache/grouprank/llm: records of servers started by `grouprank llm serve`."""
    d = os.environ.get("GROUPRANK_STATE_DIR")
    return Path(d).expanduser() if d else Path.home() / ".cache" / "grouprank" / "llm"


def default_threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def healthy(base_url: str, timeout: float = 2.0) -> bool:
    """True when `<base_url>/models` answers 200 with a JSON body."""
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/models", timeout=timeout) as r:
            if r.status != 200:
                return False
            json.loads(r.read() or b"{}")
            return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tail(path: Path, n: int = 2000) -> str:
    try:
        data = path.read_bytes()[-n:]
    except OSError:
        return ""
    return data.decode("utf-8", "replace").strip()


def _check_server_installed(model: str) -> None:
    import importlib.util
    for mod in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "pydantic_settings"):
        if importlib.util.find_spec(mod) is None:
            raise UserError(f"cannot start the local LLM server for {model!r}: the Python module {mod!r} is "
                            "missing (pip install 'llama-cpp-python[server]'; scripts/setup.sh installs it)")


class ManagedServer:
    """One llama-cpp-python server process (see module doc)."""

    def __init__(self, model: str = "smollm2", *, port: int | None = None, threads: int | None = None,
                 n_ctx: int | None = None, log_dir: str | Path | None = None, detached: bool = False,
                 startup_timeout_s: float = STARTUP_TIMEOUT_S):
        self.model = str(model)
        m = local_models.spec(self.model)
        self.name = m.name if m is not None else Path(self.model).stem
        self.path = local_models.model_path(self.model)
        self.port = int(port) if port else None
        self.threads = int(threads) if threads else default_threads()
        self.n_ctx = int(n_ctx) if n_ctx else (m.n_ctx if m is not None else 4096)
        self.log_path = Path(log_dir or state_dir()) / f"llm_server_{self.name}.log"
        self.detached = detached
        self.startup_timeout_s = float(startup_timeout_s)
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("server not started")
        return f"http://{HOST}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def command(self) -> list[str]:
        server = ["--model", str(self.path), "--model_alias", self.name, "--host", HOST,
                  "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads),
                  "--n_threads_batch", str(self.threads), "--logits_all", "true", "--verbose", "false"]
        head = [sys.executable, "-m", "grouprank.llm.managed"]
        if not self.detached:
            head += ["--parent-pid", str(os.getpid())]
        return head + ["--"] + server

    def start(self) -> str:
        """Start the server and wait until it is healthy; returns the base URL (…/v1).
        Raises UserError naming the model and the reason (with the log's tail) when it cannot."""
        if self.proc is not None and self.proc.poll() is None:
            return self.base_url
        _check_server_installed(self.name)
        tries = 1 if self.port else 3  # a free port can be taken between the probe and the bind
        for attempt in range(tries):
            if not self.port or attempt:
                self.port = free_port()
            try:
                return self._start_once()
            except _PortTaken:
                if tries == 1:
                    raise UserError(f"local LLM server for {self.name!r}: port {self.port} on {HOST} is in use "
                                    f"(log {self.log_path})") from None
                continue
        raise UserError(f"local LLM server for {self.name!r}: no free port after {tries} tries")

    def _start_once(self) -> str:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(self.threads))
        # llama.cpp's OpenMP workers otherwise spin between operations: on a machine whose cores
        # are busy with other work that makes each answer many times slower
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {self.path} on port {self.port}\n"
                      .encode())
            log.flush()
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=self.detached)
        t0 = time.monotonic()
        while True:
            code = self.proc.poll()
            if code is not None:
                tail = _tail(self.log_path)
                self.proc = None
                if "address already in use" in tail[-400:].lower():
                    raise _PortTaken()
                raise UserError(f"the local LLM server for {self.name!r} ({self.path}) exited with code {code} "
                                f"before answering; log {self.log_path}:\n{tail[-1500:]}")
            if healthy(self.base_url, timeout=1.0):
                return self.base_url
            if time.monotonic() - t0 > self.startup_timeout_s:
                self.stop()
                raise UserError(f"the local LLM server for {self.name!r} ({self.path}) did not answer "
                                f"{self.base_url}/models within {self.startup_timeout_s:g}s; log "
                                f"{self.log_path}:\n{_tail(self.log_path)[-1500:]}")
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout)

    def record(self) -> dict:
        return {"pid": self.pid, "port": self.port, "model": self.name, "path": str(self.path),
                "base_url": self.base_url, "log": str(self.log_path), "threads": self.threads,
                "n_ctx": self.n_ctx, "started": time.time()}


class _PortTaken(Exception):
    pass


# --------------------------------------------------------------------------- recorded servers

def record_path(name: str) -> Path:
    return state_dir() / f"{name}.json"


def pid_is_server(pid: int) -> bool:
    """True when `pid` is alive and is a grouprank/llama_cpp server process (not a reused pid)."""
    try:
        cmd = Path(f"/proc/{int(pid)}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        try:
            os.kill(int(pid), 0)
        except OSError:
            return False
        return True  # pragma: no cover - no /proc: trust the pid
    return b"grouprank.llm.managed" in cmd or b"llama_cpp.server" in cmd


def read_records() -> list[dict]:
    d = state_dir()
    out = []
    for f in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        rec["record"] = str(f)
        rec["alive"] = bool(rec.get("pid")) and pid_is_server(rec["pid"])
        rec["healthy"] = rec["alive"] and healthy(rec.get("base_url", ""), timeout=1.0)
        out.append(rec)
    return out


def recorded(name: str) -> dict | None:
    """The record of a live, healthy server of model `name` started by `grouprank llm serve`."""
    key = _name(name)
    for rec in read_records():
        if rec.get("model") == key and rec["healthy"]:
            return rec
    return None


def _name(model: str) -> str:
    m = local_models.spec(model)
    return m.name if m is not None else Path(str(model)).stem


def serve(model: str = "smollm2", *, port: int | None = None, threads: int | None = None,
          log_dir: str | Path | None = None) -> dict:
    """Start a detached server (outlives this process) and record it; returns the record.
    An already running recorded server of the same model is returned as it is."""
    rec = recorded(model)
    if rec is not None:
        rec["reused"] = True
        return rec
    srv = ManagedServer(model, port=port, threads=threads, log_dir=log_dir, detached=True)
    srv.start()
    rec = srv.record()
    from grouprank.atomic import write_json_atomic
    write_json_atomic(record_path(srv.name), rec)
    srv.proc = None  # detached: not ours to stop at exit
    return rec


def stop_recorded(model: str | None = None, timeout: float = 10.0) -> list[dict]:
    """Stop the recorded servers (of `model`, or all); returns the records handled."""
    out = []
    key = _name(model) if model else None
    for rec in read_records():
        if key is not None and rec.get("model") != key:
            continue
        pid = rec.get("pid")
        if rec["alive"] and pid:
            try:
                os.killpg(int(pid), signal.SIGTERM)  # detached: its own session and process group
            except OSError:
                try:
                    os.kill(int(pid), signal.SIGTERM)
                except OSError:
                    pass
            t0 = time.monotonic()
            while pid_is_server(pid) and time.monotonic() - t0 < timeout:
                time.sleep(0.1)
            if pid_is_server(pid):
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
            rec["stopped"] = True
        else:
            rec["stopped"] = False
        Path(rec["record"]).unlink(missing_ok=True)
        out.append(rec)
    return out


# --------------------------------------------------------------------------- once per process

_LOCK = threading.Lock()
_SERVERS: dict[str, ManagedServer] = {}
_URLS: dict[str, str] = {}


def ensure(model: str = "smollm2", *, threads: int | None = None, log_dir: str | Path | None = None) -> str:
    """The base URL of a healthy server for `model`: one started by this process (started now on
    first use, stopped at exit), or a running one recorded by `grouprank llm serve`."""
    key = _name(model)
    with _LOCK:
        srv = _SERVERS.get(key)
        if srv is not None and srv.proc is not None and srv.proc.poll() is None:
            return srv.base_url
        url = _URLS.get(key)
        if url is not None and healthy(url):
            return url
        rec = recorded(model)
        if rec is not None:
            _URLS[key] = rec["base_url"]
            return rec["base_url"]
        srv = ManagedServer(model, threads=threads, log_dir=log_dir)
        srv.start()
        if not _SERVERS:
            atexit.register(stop_all)
        _SERVERS[key] = srv
        return srv.base_url


def stop_all() -> None:
    """Stop every server this process started with `ensure`."""
    with _LOCK:
        servers = list(_SERVERS.values())
        _SERVERS.clear()
        _URLS.clear()
    for s in servers:
        s.stop()


# --------------------------------------------------------------------------- the child entry point

def _watch_parent(ppid: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != ppid:
            os._exit(0)


def _without_extra_buffer_types() -> None:
    """Load models without llama.cpp's extra CPU buffer types (weight repacking, AMX).

    A llama.cpp compiled with -march=native on a CPU that reports AMX uses AMX tiles for batched
    matrix products; where the kernel or sandbox does not grant the tile state (seen on the
    project's 2-core machines) the first prompt longer than one token dies with SIGILL. Set
    GROUPRANK_LLM_EXTRA_BUFTS=1 to keep them (a few percent faster on Q4_0/Q4_K models where
    they work). scripts/setup.sh builds without AMX in the first place."""
    if os.environ.get("GROUPRANK_LLM_EXTRA_BUFTS", "") not in ("", "0"):
        return
    import llama_cpp.llama_cpp as C
    orig = C.llama_model_default_params
    if getattr(orig, "_grouprank", False):
        return

    def params():
        p = orig()
        if hasattr(p, "use_extra_bufts"):
            p.use_extra_bufts = False
        return p
    params._grouprank = True
    C.llama_model_default_params = params


def _main(argv: list[str]) -> None:
    """`python -m grouprank.llm.managed [--parent-pid PID] -- <llama_cpp.server args>`: run the
    server in this process; with --parent-pid, exit when that process is gone."""
    if "--" not in argv:
        raise SystemExit("usage: python -m grouprank.llm.managed [--parent-pid PID] -- <server args>")
    i = argv.index("--")
    own, server_args = argv[:i], argv[i + 1:]
    if own[:1] == ["--parent-pid"] and len(own) == 2:
        threading.Thread(target=_watch_parent, args=(int(own[1]),), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    _without_extra_buffer_types()
    import runpy
    sys.argv = ["llama_cpp.server"] + server_args
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _main(sys.argv[1:])


def resolve_managed(endpoint, log_dir: Path | None = None):
    """A copy of a managed endpoint (`managed: smollm2`, no base_url) pointing at its local server,
    started now unless this process (or `grouprank llm serve`) already runs it
    (`grouprank.llm.managed.ensure`). Its cache identity stays ``managed:<model>`` (the port changes
    from run to run). `max_concurrency` is capped at 2: llama-cpp-python's server answers one
    request at a time, a second one in flight keeps it busy, more would only wait on its lock
    against their own timeouts."""
    url = ensure(endpoint.managed, threads=getattr(endpoint, "managed_threads", None), log_dir=log_dir)
    return endpoint.model_copy(update={"base_url": url, "max_concurrency": min(int(endpoint.max_concurrency), 2)})
