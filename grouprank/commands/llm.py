"""`grouprank llm serve|stop|status`: the local LLM server grouprank runs itself
(`grouprank.llm.managed`, llama-cpp-python's OpenAI-compatible server on 127.0.0.1).

    grouprank llm serve [--model smollm2] [--port N] [--threads N]   start it detached, print its record
    grouprank llm status                                               the recorded servers, alive/healthy
    grouprank llm stop [--model smollm2]                               stop them (all without --model)

The running server is recorded (pid, port, model, base_url, log) in
`$GROUPRANK_STATE_DIR` (default ~/.cache/grouprank/llm); an endpoint `{name: local, managed:
smollm2}` uses it while it runs instead of starting its own copy.
"""
from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("llm", help="serve / stop / show the local LLM server (llama.cpp, e.g. SmolLM2)",
                       description="The local OpenAI-compatible LLM server grouprank manages itself.")
    s = p.add_subparsers(dest="llm_command", required=True)
    sv = s.add_parser("serve", help="start the local server detached and record it")
    sv.add_argument("--model", default="smollm2", help="smollm2, gemma3-270m or a .gguf path (default smollm2)")
    sv.add_argument("--port", type=int, help="port on 127.0.0.1 (default: a free one)")
    sv.add_argument("--threads", type=int, help="CPU threads (default: the machine's cores, at most 8)")
    sv.add_argument("--log-dir", help="server log folder (default: the state folder)")
    sv.set_defaults(func=cmd_serve)
    st = s.add_parser("stop", help="stop the recorded server(s)")
    st.add_argument("--model", help="only this model's server (default: all)")
    st.set_defaults(func=cmd_stop)
    ss = s.add_parser("status", help="show the recorded servers")
    ss.set_defaults(func=cmd_status)
    ls = s.add_parser("models", help="the local models and where their files are")
    ls.set_defaults(func=cmd_models)


def _public(rec: dict) -> dict:
    return {k: rec[k] for k in ("model", "pid", "port", "base_url", "path", "log", "threads", "n_ctx",
                                "alive", "healthy", "reused", "stopped") if k in rec}


def cmd_serve(args) -> int:
    from grouprank.llm.managed import serve
    rec = serve(args.model, port=args.port, threads=args.threads, log_dir=args.log_dir)
    print(json.dumps(_public(rec), indent=2))
    return 0


def cmd_stop(args) -> int:
    from grouprank.llm.managed import stop_recorded
    recs = stop_recorded(args.model)
    print(json.dumps({"stopped": [_public(r) for r in recs]}, indent=2))
    return 0


def cmd_status(args) -> int:
    from grouprank.llm.managed import read_records, state_dir
    recs = read_records()
    print(json.dumps({"state_dir": str(state_dir()), "servers": [_public(r) for r in recs]}, indent=2))
    return 0


def cmd_models(args) -> int:
    from grouprank.llm.local_models import MODELS, available
    paths = available()
    print(json.dumps({n: {"file": paths[n], "license": m.license, "description": m.description}
                      for n, m in MODELS.items()}, indent=2))
    return 0
