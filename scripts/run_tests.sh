#!/usr/bin/env bash
# The test command (README.md, Install): sets up what is missing (scripts/setup_env.py: your
# PyTorch and Detectron2 as they are, else a .venv in this checkout), checks formatting and
# lint, runs the whole suite on CPU with the interpreter the setup chose.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$("${PYTHON:-python3}" scripts/setup_env.py --print-python)
"$PY" -m ruff format --check .
"$PY" -m ruff check .
# pytest exits 5 when it collects nothing: with `set -e` that fails the run, as it should.
"$PY" -m pytest tests -q -p no:cacheprovider "$@"
