#!/usr/bin/env bash
# The main command (README.md, top): installs what is missing (scripts/setup_env.py), then
# evaluates baseline against Turbo on the shipped models (scripts/benchmark.py; its options,
# e.g. --full, pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" scripts/setup_env.py
"$PY" scripts/benchmark.py "$@"
