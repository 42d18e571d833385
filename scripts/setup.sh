#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with the project installed (editable).
# Reinstalls only when pyproject.toml changed since the last successful install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
STAMP="$VENV/.grouprank-installed"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)-${1:-main}"
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[setup] creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
if [[ ! -f "$STAMP" ]] || ! grep -qx "$want" "$STAMP" 2>/dev/null; then
  echo "[setup] installing grouprank and its dependencies (first time: ~2-3 minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch first, pinned: the CPU build of exactly this version lies on the machine.
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q -e "$ROOT[test]" --config-settings editable_mode=compat
  echo "$want" > "$STAMP"
else
  echo "[setup] environment up to date ($VENV)"
fi
