#!/usr/bin/env bash
# Creates .venv with gwprune's dependencies and installs gwprune into it, compiling
# the CUDA kernels whenever torch has CUDA and nvcc is found (also with no GPU).
#   VENV=path  use another virtual environment (default .venv)
#   TORCH_CUDA_ARCH_LIST  architectures to compile (default 8.0;9.0)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"${PIP[@]}" "torch==2.14.1" "torchvision==0.29.1" ninja pybind11 numpy setuptools wheel
"${PIP[@]}" pytest hypothesis matplotlib tqdm transformers scikit-learn ruff clang-format
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0;9.0}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
"${PIP[@]}" --no-build-isolation --no-deps --force-reinstall .
"$VENV/bin/python" -m gwprune info
