#!/usr/bin/env bash
# Create .venv and install ranker with its test extras. Idempotent; works offline against the local indexes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch first, pinned: the CPU wheel on local disk; any looser spec pulls the CUDA build
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
