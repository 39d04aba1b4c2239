#!/usr/bin/env bash
# The tests: lint, then pytest (unit tests and short end-to-end runs of the real configs) in two processes of one
# thread each, a test file to a process (its module fixtures are made once). Extra arguments go to pytest
# (e.g. -n 0 for one process, -k <words> for some tests).
set -euo pipefail
cd "$(dirname "$0")"
VENV_REQUIREMENTS=requirements-dev.txt source tools/venv.sh
ruff format --check .
ruff check .
python -m pytest -q -n 2 --dist loadfile "$@"
