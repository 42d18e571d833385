"""What every bench shares: its environment, set before any heavy import and printed, and its report.

    from _common import setup, write_report   # first, before numpy / torch / onnxruntime / transformers
    ENV = setup("retrieval")
    ...
    write_report(args.out, report)             # adds report["machine"], writes the JSON atomically

`setup` sets, unless the caller's environment already says otherwise (as scripts/*.sh do):
  OMP_WAIT_POLICY=PASSIVE       libgomp (torch's OpenMP) reads it once, when torch loads. Unset, an
                                idle OpenMP worker spins for a while after every parallel region,
                                so on a 2-core machine shared with other jobs it takes CPU from
                                everything else (the other backend of an A/B, the LLM server,
                                other people's processes) and its timings depend on who else runs.
  TOKENIZERS_PARALLELISM=false  no Rayon pool in the Rust tokenizers (and no fork warning)
  HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1   models load from local files only
It then prints one line to stderr naming each value and whether it came from the caller or from here,
and warns when torch was imported before it (then OMP_WAIT_POLICY can no longer take effect).
The repository root is put on sys.path only when `grouprank` would not be imported from this
checkout (the project is normally installed editable, which already makes it importable).

`write_report` records, under "machine": CPUs, Python, platform, the environment above, the 1-minute
load average at setup and at the end, and the torch / onnxruntime thread counts when they are loaded:
numbers from a busy 2-core machine say so in their own file.
"""
from __future__ import annotations

import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BENCH_ENV = {
    "OMP_WAIT_POLICY": "PASSIVE",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
_HEAVY = ("torch", "onnxruntime", "transformers", "sentence_transformers")

_state: dict = {}


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _ensure_importable() -> bool:
    """Put the repository root on sys.path when `grouprank` would not come from this checkout."""
    spec = importlib.util.find_spec("grouprank")
    origin = str(getattr(spec, "origin", "") or "")
    if spec is None or not origin.startswith(str(ROOT) + os.sep):
        sys.path.insert(0, str(ROOT))
        return True
    return False


def setup(name: str, **extra_env: str) -> dict:
    """Set the bench environment (BENCH_ENV plus `extra_env`; values already in the environment
    win), make the project importable, print what is in effect; returns {variable: value}."""
    wanted = {**BENCH_ENV, **extra_env}
    source = {}
    for k, v in wanted.items():
        if k in os.environ:
            source[k] = "caller"
        else:
            os.environ[k] = v
            source[k] = "bench"
    env = {k: os.environ[k] for k in wanted}
    early = [m for m in _HEAVY if m in sys.modules]
    added_path = _ensure_importable()
    _state.update(name=name, env=env, source=source, loadavg_start=_loadavg(), t0=time.time(),
                  loaded_before_setup=early, added_path=added_path)
    shown = " ".join(f"{k}={v}({source[k]})" for k, v in env.items())
    print(f"[bench {name}] env: {shown}; cpus={os.cpu_count()} load1={_state['loadavg_start']}"
          + ("; repo root put on sys.path" if added_path else ""), file=sys.stderr, flush=True)
    if early:
        print(f"[bench {name}] warning: {', '.join(early)} imported before setup(): OMP_WAIT_POLICY may "
              f"not apply", file=sys.stderr, flush=True)
    return env


def _threads() -> dict:
    out: dict = {}
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        out["torch_intra_op"] = torch.get_num_threads()
        out["torch_inter_op"] = torch.get_num_interop_threads()
    if "onnxruntime" in sys.modules:
        out["onnxruntime"] = sys.modules["onnxruntime"].__version__
    return out


def machine() -> dict:
    """The machine and environment a bench ran with (see module docstring)."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "env": dict(_state.get("env") or {k: os.environ.get(k) for k in BENCH_ENV}),
        "env_source": dict(_state.get("source") or {}),
        "heavy_modules_loaded_before_setup": list(_state.get("loaded_before_setup") or []),
        "threads": _threads(),
        "loadavg_1m_start": _state.get("loadavg_start"),
        "loadavg_1m_end": _loadavg(),
        "wall_s": round(time.time() - _state["t0"], 1) if "t0" in _state else None,
    }


def write_report(path: str | os.PathLike, report: dict, *, key: str = "machine") -> dict:
    """Add `machine()` under `key` (merged into an existing dict there) and write the report as
    indented JSON (temporary file + rename). Returns the report."""
    m = machine()
    if isinstance(report.get(key), dict):
        report[key] = {**report[key], **m}
    else:
        report[key] = m
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(report, indent=2, default=str) + "\n")
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return report
