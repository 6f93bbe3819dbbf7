#!/usr/bin/env bash
# The test command (README.md, "Tests"): installs what the registries provide, checks that
# Detectron2 is there, installs this package, runs the whole suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install -q --disable-pip-version-check -r requirements.txt
if ! "$PY" -c "import detectron2" >/dev/null 2>&1; then
  echo "error: Detectron2 is not installed; it is not on PyPI, so install it from its git repository first, as README.md says: pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git@02b5c4e295e990042a714712c21dc79b731e8833'" >&2
  exit 1
fi
"$PY" -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
# pytest exits 5 when it collects nothing: with `set -e` that fails the run, as it should.
"$PY" -m pytest tests -q -p no:cacheprovider "$@"
