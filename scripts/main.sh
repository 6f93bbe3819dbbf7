#!/usr/bin/env bash
# The main command (README.md, Install): sets up what is missing (scripts/setup_env.py: your
# PyTorch and Detectron2 as they are, else a .venv in this checkout), then evaluates baseline
# against Turbo on the shipped models (scripts/benchmark.py; its options, e.g. --full, pass
# through).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$("${PYTHON:-python3}" scripts/setup_env.py --print-python)
"$PY" scripts/benchmark.py "$@"
