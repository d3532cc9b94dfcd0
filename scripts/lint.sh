#!/usr/bin/env bash
# ruff (lint + format) for Python, clang-format for C++/CUDA. Needs .venv (setup_env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
"$BIN/ruff" check python tests examples bench csrc
"$BIN/ruff" format --check python tests examples bench csrc
"$BIN/clang-format" --dry-run -Werror csrc/*.h csrc/*.cpp csrc/cpu/* csrc/cuda/*.* csrc/cuda/implicit/*.cu* csrc/cuda/implicit/windows/* \
  bench/experiments/probes/*.cu*
