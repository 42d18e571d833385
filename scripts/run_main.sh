#!/usr/bin/env bash
# README command 1: set up (idempotent) and run the main job end to end on the default collection
# (SciFact from ../shared/data): the Prefect `synthesize` flow in ephemeral mode (no server needed),
# offline (local models; configs/main.yaml: the offline local judge plus SmolLM2 served by llama.cpp on
# 127.0.0.1 for query generation and active labelling). Extra arguments go to `python -m flows synthesize`
# after the main configuration, e.g. --set data.collection=cranfield, --config run.yaml (replaces it),
# --task-runner dask.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
# No outside network here: keep Prefect from trying to send telemetry.
export PREFECT_SERVER_ANALYTICS_ENABLED="${PREFECT_SERVER_ANALYTICS_ENABLED:-false}"
# A fresh Prefect database takes longer than the ephemeral server's default 20 s start-up limit.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-120}"
# Keep Prefect's state (ephemeral SQLite database) inside the project folder unless told otherwise.
export PREFECT_HOME="${PREFECT_HOME:-$ROOT/.prefect}"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m flows synthesize --config "$ROOT/configs/main.yaml" "$@"
