#!/usr/bin/env bash
# The test command (README.md, "Tests"): installs what is missing (scripts/setup_env.py),
# checks formatting and lint, runs the whole suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" scripts/setup_env.py
"$PY" -m ruff format --check .
"$PY" -m ruff check .
# pytest exits 5 when it collects nothing: with `set -e` that fails the run, as it should.
"$PY" -m pytest tests -q -p no:cacheprovider "$@"
