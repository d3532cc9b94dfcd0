#!/usr/bin/env bash
# Sets up .venv (scripts/setup_env.sh) and runs the test suite. CUDA tests run when
# a GPU is visible and are skipped otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# Test the installed package, not the source tree.
.venv/bin/python -m pytest tests -q -ra -p no:cacheprovider "$@"
