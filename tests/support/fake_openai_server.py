"""A real local OpenAI-compatible HTTP server (aiohttp, async) for tests and offline trials.

    python -m tests.support.fake_openai_server --port 8008 \
        --responder tests.support.judge_responder:respond --latency-ms 100 --fault-rate 0.2 --seed 1

Endpoints
  POST /v1/chat/completions   OpenAI-shaped chat completion (usage token counts = chars/4)
  GET  /v1/models             the one served model
  GET  /stats                 counters; ?detail=0 omits the per-prompt table
  POST /stats/reset           zero the counters
  POST /control               change options at run time: {"latency_ms", "fault_rates",
                              "hold_after_ok": K | null}  (hold: after K OK answers, further requests
                              wait until released or their client disconnects; for crash tests)
  GET  /health

Security: this is a test fixture, not a service. `/control`, `/stats` and `/stats/reset` are
test-only endpoints with no authentication (any local process can read the counters, change the
latency and fault rates, or hold requests), and so is the chat endpoint, which accepts any key.
The server binds to 127.0.0.1 (the `serve()` / `--host` default, and `start_local_server` always),
so only the local machine can reach it; never bind it to another interface or put it behind a proxy.

Answers come from a pluggable responder `fn(messages, body) -> str` given as "module:function"
(it may be async, and may accept a `fault` keyword to apply the wrong-labels fault itself).

Faults, drawn per request from a hash of (seed, prompt hash, n-th request for that prompt) so a
run is deterministic whatever the arrival order: `429` (with Retry-After / retry-after-ms), `500`,
`hang` (no answer for hang_s; ends when the client disconnects), `malformed` (HTTP 200, garbage
body), `truncated` (answer cut in half, finish_reason="length"), `wrong_labels` (the responder's
answer with its `[n]` document labels altered: the last label renumbered past the group, so one
document goes missing), and, only when asked for explicitly, `401_echo` (401 whose body echoes
the Authorization header, as a careless proxy might) and `auth_echo` (a 200 answer whose content
echoes it): for key-scrubbing tests.

Stats count, per prompt hash (sha256 of the canonical messages JSON, `prompt_hash()`), the
requests received and the answers delivered OK (HTTP 200, no fault, client still connected).
The server never logs request headers.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib
import inspect
import json
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("tests.support.fake_openai_server")

FAULT_KINDS = ("429", "500", "hang", "malformed", "truncated", "wrong_labels")
EXTRA_FAULT_KINDS = ("401_echo", "auth_echo")
_LABEL = re.compile(r"\[(\d+)\]")


def prompt_hash(messages: list[dict]) -> str:
    """The server's per-prompt key: sha256 of the messages as canonical JSON."""
    s = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(s.encode("utf-8")).hexdigest()


def load_responder(spec: str | Callable) -> Callable:
    """'module:function' (or 'module:Class.method', or a builtin name: 'echo', 'labels')."""
    if callable(spec):
        return spec
    if ":" not in spec:
        spec = f"tests.support.responders:{spec}"
    mod_name, attr = spec.split(":", 1)
    obj: Any = importlib.import_module(mod_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"responder {spec!r} is not callable")
    return obj


def mutate_labels(text: str) -> str:
    """Generic wrong-labels fault: renumber the last `[n]` label to one past the largest label,
    so one document is missing and an unknown one appears. Unchanged if there are no labels."""
    found = list(_LABEL.finditer(text))
    if not found:
        return text
    top = max(int(m.group(1)) for m in found)
    last = found[-1]
    return text[:last.start()] + f"[{top + 1}]" + text[last.end():]


def _tokens(s: str) -> int:
    return max(1, (len(s) + 3) // 4)


def parse_fault_rates(fault_rate: float = 0.0, kinds: str | list[str] | None = None,
                      overrides: list[str] | dict | None = None) -> dict[str, float]:
    """Total `fault_rate` spread evenly over `kinds` (default: all six), then KIND=RATE overrides."""
    if isinstance(kinds, str):
        kinds = [k for k in kinds.split(",") if k]
    kinds = list(kinds) if kinds else list(FAULT_KINDS)
    for k in kinds:
        if k not in FAULT_KINDS + EXTRA_FAULT_KINDS:
            raise ValueError(f"unknown fault kind {k!r} (known: {FAULT_KINDS + EXTRA_FAULT_KINDS})")
    rates = {k: fault_rate / len(kinds) for k in kinds} if fault_rate else {}
    items = overrides.items() if isinstance(overrides, dict) else (
        tuple(o.split("=", 1)) for o in (overrides or []))
    for k, v in items:
        if k not in FAULT_KINDS + EXTRA_FAULT_KINDS:
            raise ValueError(f"unknown fault kind {k!r}")
        rates[k] = float(v)
    if sum(rates.values()) > 1.0 + 1e-9:
        raise ValueError(f"fault rates sum to more than 1: {rates}")
    return {k: v for k, v in rates.items() if v > 0}


class LocalLLMServer:
    def __init__(self, responder: str | Callable = "echo", *, latency_ms: float = 0.0,
                 fault_rates: dict[str, float] | None = None, seed: int = 0,
                 retry_after_s: float = 0.05, hang_s: float = 3600.0, model: str = "local",
                 responder_threads: int = 0):
        self.responder = load_responder(responder)
        self.responder_name = responder if isinstance(responder, str) else getattr(responder, "__name__", "?")
        try:
            params = inspect.signature(self.responder).parameters
            self._takes_fault = "fault" in params or any(
                p.kind == p.VAR_KEYWORD for p in params.values())
        except (TypeError, ValueError):
            self._takes_fault = False
        self._is_async = inspect.iscoroutinefunction(self.responder)
        self.latency_s = latency_ms / 1000.0
        self.fault_rates = dict(fault_rates or {})
        self.seed = seed
        self.retry_after_s = retry_after_s
        self.hang_s = hang_s
        self.model = model
        self.responder_threads = responder_threads
        self.hold_after_ok: int | None = None
        self._release: asyncio.Event | None = None
        self.reset()

    # ------------------------------------------------------------------ stats
    def reset(self) -> None:
        self.requests = 0
        self.ok = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.auth_requests = 0
        self.faults: dict[str, int] = defaultdict(int)
        self.per_prompt: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # [requests, ok]
        self.started = time.time()

    def stats(self, detail: bool = True) -> dict:
        out = {
            "requests": self.requests, "ok": self.ok, "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight, "auth_requests": self.auth_requests,
            "faults": dict(self.faults), "prompts": len(self.per_prompt),
            "prompts_ok_more_than_once": sum(1 for r, o in self.per_prompt.values() if o > 1),
            "options": {"latency_ms": self.latency_s * 1000, "fault_rates": self.fault_rates,
                        "seed": self.seed, "hold_after_ok": self.hold_after_ok,
                        "responder": str(self.responder_name), "model": self.model},
        }
        if detail:
            out["per_prompt"] = {h: {"requests": r, "ok": o} for h, (r, o) in self.per_prompt.items()}
        return out

    # ------------------------------------------------------------------ faults
    def _roll(self, ph: str, n: int) -> str | None:
        if not self.fault_rates:
            return None
        d = hashlib.blake2b(f"{self.seed}:{ph}:{n}".encode(), digest_size=8).digest()
        u = int.from_bytes(d, "big") / 2.0 ** 64
        acc = 0.0
        for kind in FAULT_KINDS + EXTRA_FAULT_KINDS:
            r = self.fault_rates.get(kind, 0.0)
            acc += r
            if u < acc:
                return kind
        return None

    # ------------------------------------------------------------------ handlers
    def app(self):
        from aiohttp import web

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/models", self.models)
        app.router.add_get("/stats", self.stats_handler)
        app.router.add_post("/stats/reset", self.reset_handler)
        app.router.add_post("/control", self.control_handler)
        app.router.add_get("/health", self.health)
        return app

    async def health(self, request):
        from aiohttp import web
        return web.json_response({"ok": True})

    async def models(self, request):
        from aiohttp import web
        return web.json_response({"object": "list", "data": [
            {"id": self.model, "object": "model", "created": int(self.started), "owned_by": "grouprank"}]})

    async def stats_handler(self, request):
        from aiohttp import web
        detail = request.query.get("detail", "1") not in ("0", "false", "no")
        return web.json_response(self.stats(detail))

    async def reset_handler(self, request):
        from aiohttp import web
        self.reset()
        return web.json_response({"ok": True})

    async def control_handler(self, request):
        from aiohttp import web
        body = await request.json()
        if "latency_ms" in body:
            self.latency_s = float(body["latency_ms"]) / 1000.0
        if "fault_rates" in body:
            self.fault_rates = parse_fault_rates(0.0, None, body["fault_rates"] or {})
        if "hold_after_ok" in body:
            self.hold_after_ok = body["hold_after_ok"]
            if self._release is None:
                self._release = asyncio.Event()
            if self.hold_after_ok is None:
                self._release.set()
                self._release = asyncio.Event()
        return web.json_response(self.stats(detail=False)["options"])

    def _error(self, status: int, message: str, etype: str, headers: dict | None = None):
        from aiohttp import web
        return web.json_response({"error": {"message": message, "type": etype, "code": status}},
                                 status=status, headers=headers)

    async def _respond(self, messages, body, fault):
        kwargs = {"fault": fault} if self._takes_fault else {}
        if self._is_async:
            return await self.responder(messages, body, **kwargs)
        if self.responder_threads:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, lambda: self.responder(messages, body, **kwargs))
        return self.responder(messages, body, **kwargs)

    async def chat(self, request):
        from aiohttp import web
        try:
            body = await request.json()
            messages = body["messages"]
            if not isinstance(messages, list):
                raise TypeError("messages must be a list")
        except Exception as e:  # noqa: BLE001
            return self._error(400, f"bad request body: {type(e).__name__}", "invalid_request_error")
        if request.headers.get("Authorization"):
            self.auth_requests += 1
        ph = prompt_hash(messages)
        rec = self.per_prompt[ph]
        n = rec[0]
        rec[0] += 1
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            fault = self._roll(ph, n)
            if fault:
                self.faults[fault] += 1
            if self.latency_s > 0:
                await asyncio.sleep(self.latency_s)
            if fault == "429":
                ra = self.retry_after_s
                return self._error(429, "rate limit reached (injected)", "rate_limit_error", {
                    "Retry-After": str(max(1, math.ceil(ra))) if ra >= 1 else f"{ra:g}",
                    "retry-after-ms": str(int(ra * 1000))})
            if fault == "500":
                return self._error(500, "internal error (injected)", "server_error")
            if fault == "401_echo":
                return self._error(401, "invalid api key: " + request.headers.get("Authorization", ""),
                                   "authentication_error")
            if fault == "auth_echo":
                answer = "echo: " + request.headers.get("Authorization", "")
                return web.json_response({
                    "id": f"chatcmpl-{ph[:12]}-{n}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", self.model),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                 "finish_reason": "stop", "logprobs": None}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": _tokens(answer),
                              "total_tokens": 1 + _tokens(answer)}})
            if fault == "hang":
                await asyncio.sleep(self.hang_s)  # cancelled when the client gives up
                return self._error(504, "hang ended (injected)", "server_error")
            if fault == "malformed":
                return web.Response(status=200, content_type="application/json",
                                    text='{"id": "chatcmpl-broken", "choices": [{"message": {"content": "')
            if self.hold_after_ok is not None and self.ok >= self.hold_after_ok:
                if self._release is None:
                    self._release = asyncio.Event()
                await self._release.wait()
            try:
                answer = await self._respond(messages, body, fault if fault == "wrong_labels" else None)
            except Exception as e:  # noqa: BLE001
                self.faults["responder_error"] += 1
                log.exception("responder failed")
                return self._error(500, f"responder error: {type(e).__name__}: {e}", "server_error")
            answer = "" if answer is None else str(answer)
            finish = "stop"
            clean = fault is None
            if fault == "truncated":
                answer = answer[: len(answer) // 2]
                finish = "length"
            elif fault == "wrong_labels" and not self._takes_fault:
                mutated = mutate_labels(answer)
                clean = mutated == answer  # nothing to mutate: an honest answer after all
                answer = mutated
            prompt_text = "".join(m.get("content") if isinstance(m.get("content"), str)
                                  else json.dumps(m.get("content")) for m in messages)
            pt, ct = _tokens(prompt_text), _tokens(answer)
            resp = {
                "id": f"chatcmpl-{ph[:12]}-{n}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", self.model),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                             "finish_reason": finish, "logprobs": None}],
                "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
            }
            tr = request.transport
            if clean and tr is not None and not tr.is_closing():
                rec[1] += 1
                self.ok += 1
            return web.json_response(resp)
        finally:
            self.in_flight -= 1


# ----------------------------------------------------------------------------------------------
# running it
# ----------------------------------------------------------------------------------------------
async def serve(server: LocalLLMServer, host: str = "127.0.0.1", port: int = 0,
                ready: Callable[[int], None] | None = None) -> None:
    from aiohttp import web

    runner = web.AppRunner(server.app(), access_log=None, handler_cancellation=True,
                           keepalive_timeout=75)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    site = web.SockSite(runner, sock, backlog=2048, shutdown_timeout=0.5)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    if ready is not None:
        ready(sock.getsockname()[1])
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.support.fake_openai_server", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8008, help="0 picks a free port (printed on stdout)")
    p.add_argument("--responder", default="echo", help="module:function (builtins: echo, labels)")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--fault-rate", type=float, default=0.0, help="total fault rate, spread over --fault-kinds")
    p.add_argument("--fault-kinds", default=",".join(FAULT_KINDS))
    p.add_argument("--fault", action="append", default=[], metavar="KIND=RATE", help="per-kind rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retry-after-s", type=float, default=0.05)
    p.add_argument("--hang-s", type=float, default=3600.0)
    p.add_argument("--model", default="local")
    p.add_argument("--responder-threads", type=int, default=0,
                   help="run a sync responder in a thread pool (for slow responders)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = LocalLLMServer(a.responder, latency_ms=a.latency_ms,
                            fault_rates=parse_fault_rates(a.fault_rate, a.fault_kinds, a.fault),
                            seed=a.seed, retry_after_s=a.retry_after_s, hang_s=a.hang_s, model=a.model,
                            responder_threads=a.responder_threads)

    def ready(port: int) -> None:
        print(json.dumps({"ready": True, "port": port, "base_url": f"http://{a.host}:{port}/v1"}), flush=True)
        # nobody reads our stdout after this line: send later prints (e.g. a chatty responder)
        # to stderr so a full pipe can never block the server
        try:
            os.dup2(2, 1)
        except OSError:
            pass

    asyncio.run(serve(server, a.host, a.port, ready))
    return 0


class LocalServerHandle:
    """A local server running in a subprocess (see `start_local_server`)."""

    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path | None):
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.url}/v1"
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _call(self, path: str, body: dict | None = None, timeout: float = 30.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def stats(self, detail: bool = True) -> dict:
        return self._call("/stats" + ("" if detail else "?detail=0"))

    def reset(self) -> None:
        self._call("/stats/reset", {})

    def control(self, **options) -> dict:
        return self._call("/control", options)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> "LocalServerHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_local_server(responder: str | Callable = "echo", *, latency_ms: float = 0.0,
                       fault_rate: float = 0.0, fault_kinds: str | list[str] | None = None,
                       faults: dict[str, float] | None = None, seed: int = 0,
                       retry_after_s: float = 0.05, hang_s: float = 3600.0, model: str = "local",
                       responder_threads: int = 0, log_path: str | Path | None = None,
                       env: dict[str, str] | None = None, pythonpath: list[str] | None = None,
                       startup_timeout: float = 60.0) -> LocalServerHandle:
    """Start the server in a subprocess on a free 127.0.0.1 port and wait until it answers.

    `responder` is "module:function" (a module-level callable is turned into one; it must be
    importable in the child: add its directory with `pythonpath`). Returns a handle with
    `.base_url`, `.stats()`, `.reset()`, `.control(...)`, `.stop()`; usable as a context manager.
    The child's stderr goes to `log_path` when given."""
    if callable(responder):
        responder = f"{responder.__module__}:{responder.__qualname__}"
    cmd = [sys.executable, "-m", "tests.support.fake_openai_server", "--port", "0", "--responder", responder,
           "--latency-ms", str(latency_ms), "--seed", str(seed), "--retry-after-s", str(retry_after_s),
           "--hang-s", str(hang_s), "--model", model, "--responder-threads", str(responder_threads)]
    rates = parse_fault_rates(fault_rate, fault_kinds, faults)  # validate here, pass explicitly
    for k, v in rates.items():
        cmd += ["--fault", f"{k}={v!r}"]
    child_env = dict(os.environ)
    repo_root = str(Path(__file__).resolve().parents[2])
    paths = [repo_root] + list(pythonpath or [])
    if child_env.get("PYTHONPATH"):
        paths.append(child_env["PYTHONPATH"])
    child_env["PYTHONPATH"] = os.pathsep.join(paths)
    child_env.update(env or {})
    err = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=child_env, text=True)
    finally:
        if log_path:
            err.close()
    deadline = time.monotonic() + startup_timeout
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    line = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if sel.select(timeout=0.2):
            line = proc.stdout.readline()
            if line.strip().startswith("{"):
                break
    sel.close()
    try:
        info = json.loads(line)
        port = int(info["port"])
    except (ValueError, KeyError, TypeError):
        proc.kill()
        proc.wait()
        tail = Path(log_path).read_text(errors="replace")[-2000:] if log_path else ""
        raise RuntimeError(f"local LLM server did not start (exit={proc.returncode}): {tail}") from None
    return LocalServerHandle(proc, port, Path(log_path) if log_path else None)


if __name__ == "__main__":
    sys.exit(main())
