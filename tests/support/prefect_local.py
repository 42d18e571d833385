"""Helpers for the Prefect flow tests (not a test module): a local Prefect server + worker started
with scripts/prefect_local.sh, a small pipeline configuration, and a headless Chromium driven
over the DevTools protocol (websockets; no extra dependency)."""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(REPO / ".venv" / "bin" / "prefect") if (REPO / ".venv" / "bin" / "prefect").exists() \
    else shutil.which("prefect") or "prefect"
CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_config(work_dir: Path, llm_base_url: str | None, name: str = "flowtest",
                 judge_kind: str = "pointwise") -> dict:
    """Cranfield (1,400 short docs), 6 test queries, pools of 10: every stage has real work but
    little of it. One LLM judge at the local OpenAI-compatible server plus the offline local judge."""
    judges = [{"id": "local", "kind": "local", "local_e5": False}]
    endpoints = []
    if llm_base_url:
        endpoints = [{"name": "local", "base_url": llm_base_url, "model": "local", "max_concurrency": 4,
                      "max_retries": 2, "timeout_s": 30}]
        judges.append({"id": "llm", "kind": judge_kind, "endpoint": "local"})
    return {
        "name": name,
        "work_dir": str(work_dir),
        "data": {"collection": "cranfield"},
        "queries": {"splits": ["test"], "max_queries": 6, "leakage_eval_splits": []},
        "retrieval": {"depth": 50, "pool_top": 5, "pool_sampled": 5, "pool_sample_from": [6, 50],
                      "max_seq_length": 32, "batch_size": 64},
        "llm": {"endpoints": endpoints},
        "judges": {"judges": judges},
        "datasets": {"group_min": 3, "group_max": 6, "groups_per_query": 2, "negatives_per_example": 2},
        # cranfield has only test queries, and they are the mined ones here: no held-out evaluation
        "retriever": {"max_steps": 2, "batch_size": 4, "eval_split": "none",
                      "holdout_fraction": 0.0},
        # the random tiny policy (seconds; the SmolLM2 default is tested in tests/test_reranker_*):
        # two GRPO steps may leave it unchanged, which is not what these tests are about
        "reranker": {"base_model": "tiny", "require_grpo_update": False, "sft_epochs": 1.0, "grpo_steps": 2,
                     "num_generations": 2, "per_device_batch_size": 4, "max_train_examples": 8,
                     "max_completion_length": 32},
        "rerank": {"top": 10, "group_size": 5, "max_tokens": 32},
        # the other cranfield test queries; a few reranked through the LLM endpoint
        "evaluation": {"split": "test", "rerank_max_queries": 2},
    }


# ------------------------------------------------------------------------------------ server
class LocalPrefect:
    """scripts/prefect_local.sh with its own PREFECT_HOME and a free port."""

    def __init__(self, home: Path, extra_env: dict | None = None):
        self.home = Path(home)
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.ui = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        self.env.update({"PREFECT_HOME": str(self.home), "PREFECT_PORT": str(self.port),
                         "PREFECT_API_URL": self.api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                         "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                         "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "5",
                         # no nightly run may start during a test
                         "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
                         "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false"})
        self.env.update(extra_env or {})
        self.start_output = ""

    def script(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(REPO / "scripts" / "prefect_local.sh"), *args], env=self.env,
                              cwd=str(REPO), capture_output=True, text=True, timeout=timeout)

    def start(self) -> None:
        r = self.script("start")
        self.start_output = r.stdout + r.stderr
        if r.returncode != 0:
            raise RuntimeError(f"prefect_local.sh start failed ({r.returncode}):\n{self.start_output[-4000:]}"
                               f"\n--- server log ---\n{self.log('server')[-3000:]}")

    def stop(self) -> str:
        r = self.script("stop", timeout=120)
        return r.stdout + r.stderr

    def log(self, which: str) -> str:
        p = self.home / "run" / f"{which}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    # -- REST ---------------------------------------------------------------------------------
    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 30,
             attempts: int = 8) -> object:
        """One API call; 502/503/504 (SQLite busy under load) and connection errors are retried
        with exponential backoff, as Prefect's own client does."""
        import urllib.error
        data = json.dumps(body).encode() if body is not None else None
        for i in range(attempts):
            req = urllib.request.Request(self.api + path, data=data, method=method,
                                         headers={"content-type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=timeout) as r:
                    raw = r.read()
                return json.loads(raw) if raw else None
            except urllib.error.HTTPError as e:
                if e.code not in (502, 503, 504) or i == attempts - 1:
                    raise
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if i == attempts - 1:
                    raise
            time.sleep(min(10.0, 0.5 * 2 ** i))

    def deployment(self, full_name: str) -> dict:
        flow, dep = full_name.split("/")
        return self.call("GET", f"/deployments/name/{flow}/{dep}")

    def run_deployment(self, full_name: str, parameters: dict) -> str:
        dep = self.deployment(full_name)
        fr = self.call("POST", f"/deployments/{dep['id']}/create_flow_run", {"parameters": parameters})
        return fr["id"]

    def wait_flow_run(self, flow_run_id: str, timeout: float = 600) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            fr = self.call("GET", f"/flow_runs/{flow_run_id}")
            if fr["state"] and fr["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return fr
            time.sleep(2)
        raise TimeoutError(f"flow run {flow_run_id} not finished in {timeout} s; worker log:\n"
                           f"{self.log('worker')[-3000:]}")

    def task_runs(self, flow_run_id: str) -> list[dict]:
        return self.call("POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}},
                                                      "limit": 200})

    def artifacts(self, flow_run_id: str) -> list[dict]:
        return self.call("POST", "/artifacts/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}},
                                                      "limit": 200})

    def logs(self, flow_run_id: str) -> list[dict]:
        return self.call("POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}},
                                                 "limit": 200, "sort": "TIMESTAMP_ASC"})

    def all_logs(self, flow_run_id: str, settle_s: float = 3.0) -> list[dict]:
        """Every log of the flow run (paged), read again until two reads `settle_s` apart agree
        (the run's process sends its last batch as it exits)."""
        def read() -> list[dict]:
            out: list[dict] = []
            while True:
                page = self.call("POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}},
                                                         "limit": 200, "offset": len(out), "sort": "TIMESTAMP_ASC"})
                out += page
                if len(page) < 200:
                    return out
        logs = read()
        for _ in range(10):
            time.sleep(settle_s)
            again = read()
            if len(again) == len(logs):
                break
            logs = again
        return logs


# ------------------------------------------------------------------------------------ browser
class Chromium:
    """Headless Chromium with a fresh profile, driven over the DevTools protocol."""

    def __init__(self, profile: Path, width: int = 1400, height: int = 1800):
        self.profile = Path(profile)
        self.profile.mkdir(parents=True, exist_ok=True)
        args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--no-default-browser-check", "--mute-audio",
                f"--user-data-dir={self.profile}", "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0", f"--window-size={width},{height}", "about:blank"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(self.profile / "chromium.log", "wb"))
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while time.time() < deadline and not port_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError("chromium exited: " + (self.profile / "chromium.log").read_text(errors="replace")[-2000:])
            time.sleep(0.2)
        time.sleep(0.3)
        self.port = int(port_file.read_text().split()[0])
        pages = []
        while time.time() < deadline and not pages:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as r:
                pages = [p for p in json.load(r) if p.get("type") == "page"]
            time.sleep(0.2)
        from websockets.sync.client import connect
        self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024, open_timeout=30)
        self._id = 0
        self.send("Page.enable")
        self.send("Runtime.enable")

    def send(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        self._id += 1
        mid = self._id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params or {}}))
        deadline = time.time() + timeout
        while time.time() < deadline:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.time())))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
        raise TimeoutError(method)

    def goto(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def eval(self, expression: str):
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        return r.get("result", {}).get("value")

    def text(self) -> str:
        return self.eval("document.body ? document.body.innerText : ''") or ""

    def wait_text(self, needles: list[str], timeout: float = 90) -> str:
        deadline = time.time() + timeout
        txt = ""
        while time.time() < deadline:
            txt = self.text()
            if all(n in txt for n in needles):
                return txt
            time.sleep(1)
        raise AssertionError(f"page never showed {needles}; it shows:\n{txt[:3000]}")

    def click_text(self, label: str) -> bool:
        js = ("(() => {const want = %s; const els = [...document.querySelectorAll('button,a,[role=tab]')];"
              " const el = els.find(e => (e.innerText || '').trim() === want);"
              " if (el) { el.click(); return true } return false })()") % json.dumps(label)
        return bool(self.eval(js))

    def screenshot(self, path: Path) -> Path:
        r = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        Path(path).write_bytes(base64.b64decode(r["data"]))
        return Path(path)

    def close(self) -> None:
        try:
            try:
                self.send("Browser.close", timeout=5)
            except Exception:
                pass
            self.ws.close()
        finally:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
