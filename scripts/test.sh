#!/usr/bin/env bash
# Install, lint, then run the whole test suite, the tests marked slow included (a plain `pytest` leaves them out).
# Extra arguments go to pytest (e.g. --data=DIR; -m "not java" replaces the selection).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
.venv/bin/ruff check ranker tests || { echo "ruff found problems (pyproject.toml [tool.ruff])" >&2; exit 1; }
.venv/bin/python -m pytest -m "slow or not slow" "$@"
status=$?
# pytest exits 5 when it collected no test: that is a failure of the suite, say so
[ "$status" -eq 5 ] && echo "pytest collected no tests" >&2
exit "$status"
