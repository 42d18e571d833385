#!/usr/bin/env bash
# A local Prefect setup for this project, in one command:
#
#   scripts/prefect_local.sh start    server on 127.0.0.1:${PREFECT_PORT:-4200} (SQLite in
#                                     $PREFECT_HOME, default <repo>/.prefect), the `process` work
#                                     pool, the `llm` global concurrency limit, `prefect deploy --all`
#                                     from prefect.yaml, and a worker on the pool
#   scripts/prefect_local.sh ui       the server only: browse finished runs (the main job's, which
#                                     ran in ephemeral mode on the same $PREFECT_HOME database)
#   scripts/prefect_local.sh stop     stop the worker, then the server
#   scripts/prefect_local.sh status   what is running
#   scripts/prefect_local.sh env      the exports a shell needs to talk to this server
#
# Logs and pid files: $PREFECT_HOME/run/. Only processes this script started are stopped (by the
# pids it recorded; each runs in its own process group).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PF="${PREFECT_BIN:-$ROOT/.venv/bin/prefect}"
export PREFECT_HOME="${PREFECT_HOME:-$ROOT/.prefect}"
HOST=127.0.0.1
PORT="${PREFECT_PORT:-4200}"
export PREFECT_API_URL="http://$HOST:$PORT/api"
export PREFECT_UI_API_URL="$PREFECT_API_URL"        # what the UI in the browser calls
# the server copies its UI build here on start (by default it would write into the venv's site-packages)
export PREFECT_UI_STATIC_DIRECTORY="${PREFECT_UI_STATIC_DIRECTORY:-$PREFECT_HOME/ui-static}"
export PREFECT_SERVER_ANALYTICS_ENABLED="${PREFECT_SERVER_ANALYTICS_ENABLED:-false}"
export DO_NOT_TRACK=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
RUN="$PREFECT_HOME/run"
mkdir -p "$RUN"
cd "$ROOT"   # prefect.yaml is here; the worker's flow runs start here

# Background jobs of a non-interactive shell start with SIGINT ignored, and Python then keeps it
# ignored: Prefect's worker turns SIGINT/SIGTERM into a SIGINT to itself for a graceful stop, which
# would be lost. So each is started as `setsid $PY -c "$UNIGNORE_INT" prog args`: its own session
# (stopped as a process group, by its recorded pid), SIGINT back to default, then exec (same pid).
PY="${PYTHON_BIN:-$ROOT/.venv/bin/python}"
UNIGNORE_INT='import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])'

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

healthy() { curl -sf -m 2 "$PREFECT_API_URL/health" >/dev/null 2>&1; }

stop_one() {  # pidfile label: SIGINT (graceful, like Ctrl-C), then SIGTERM, then SIGKILL
  local f="$1" what="$2" pid sig
  if ! alive "$f"; then rm -f "$f"; echo "[prefect_local] $what: not running"; return 0; fi
  pid="$(cat "$f")"
  echo "[prefect_local] stopping $what (pid $pid)"
  for sig in INT TERM KILL; do
    kill -"$sig" -- "-$pid" 2>/dev/null || kill -"$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break 2; sleep 0.5; done
    echo "[prefect_local] $what still running after SIG$sig"
  done
  rm -f "$f"
}

start_server() {
  if alive "$RUN/server.pid"; then
    echo "[prefect_local] server already running (pid $(cat "$RUN/server.pid"))"
  else
    if healthy; then
      echo "[prefect_local] something else already answers on $PREFECT_API_URL: set PREFECT_PORT" >&2
      exit 1
    fi
    echo "[prefect_local] starting server on http://$HOST:$PORT (PREFECT_HOME=$PREFECT_HOME)"
    setsid "$PY" -c "$UNIGNORE_INT" "$PF" server start --host "$HOST" --port "$PORT" >"$RUN/server.log" 2>&1 </dev/null &
    echo $! >"$RUN/server.pid"
  fi
  for _ in $(seq 1 "${PREFECT_LOCAL_START_TIMEOUT:-180}"); do
    healthy && break
    alive "$RUN/server.pid" || { echo "[prefect_local] server exited; see $RUN/server.log" >&2; tail -20 "$RUN/server.log" >&2; exit 1; }
    sleep 1
  done
  healthy || { echo "[prefect_local] server not healthy in time; see $RUN/server.log" >&2; exit 1; }
  echo "[prefect_local] server healthy (${SECONDS}s)"
}

start() {
  start_server

  "$PF" work-pool inspect process >/dev/null 2>&1 || "$PF" work-pool create process --type process
  "$PF" global-concurrency-limit inspect llm >/dev/null 2>&1 \
    || "$PF" global-concurrency-limit create llm --limit "${GROUPRANK_LLM_CONCURRENCY:-16}"
  "$PF" --no-prompt deploy --all
  echo "[prefect_local] deployed prefect.yaml (${SECONDS}s)"

  if alive "$RUN/worker.pid"; then
    echo "[prefect_local] worker already running (pid $(cat "$RUN/worker.pid"))"
  else
    setsid "$PY" -c "$UNIGNORE_INT" "$PF" worker start --pool process --type process \
        --name "grouprank-local-$PORT" >"$RUN/worker.log" 2>&1 </dev/null &
    echo $! >"$RUN/worker.pid"
    echo "[prefect_local] worker started (pid $(cat "$RUN/worker.pid")), log $RUN/worker.log"
  fi
  echo "[prefect_local] UI: http://$HOST:$PORT   API: $PREFECT_API_URL"
  echo "[prefect_local] run the pipeline:  PREFECT_API_URL=$PREFECT_API_URL $PF deployment run synthesize/nightly"
}

stop() {
  stop_one "$RUN/worker.pid" worker     # the worker first: it reports its runs to the server
  stop_one "$RUN/server.pid" server
}

status() {
  alive "$RUN/server.pid" && echo "server: running (pid $(cat "$RUN/server.pid")), $PREFECT_API_URL" || echo "server: stopped"
  alive "$RUN/worker.pid" && echo "worker: running (pid $(cat "$RUN/worker.pid"))" || echo "worker: stopped"
}

case "${1:-}" in
  start) start ;;
  ui) start_server; echo "[prefect_local] UI: http://$HOST:$PORT (state: $PREFECT_HOME)" ;;
  stop) stop ;;
  restart) stop; start ;;
  status) status ;;
  env) echo "export PREFECT_HOME='$PREFECT_HOME' PREFECT_API_URL='$PREFECT_API_URL'" \
            "PREFECT_UI_API_URL='$PREFECT_UI_API_URL' PREFECT_UI_STATIC_DIRECTORY='$PREFECT_UI_STATIC_DIRECTORY'" ;;
  *) echo "usage: $0 start|ui|stop|restart|status|env" >&2; exit 2 ;;
esac
