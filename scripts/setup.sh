#!/usr/bin/env bash
# Builds .venv with regtune and its test tools. torch comes first, pinned: its CPU wheel lies on local
# disk here, while a plain `torch` requirement would pull a CUDA build of several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "== $PYTHON -m venv .venv ($("$PYTHON" --version 2>&1))"
  "$PYTHON" -m venv .venv
fi
echo "== pip install torch==2.13.0"
.venv/bin/python -m pip install -q torch==2.13.0
echo "== pip install -e .[dev]"
.venv/bin/python -m pip install -q -e '.[dev]'
