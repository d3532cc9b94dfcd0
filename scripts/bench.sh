#!/usr/bin/env bash
# Sets up .venv and runs the main job: `gwprune bench` (the pruning-pattern study;
# the quick GPU preset on a GPU machine, a small labelled CPU preset elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/gwprune bench "$@"
