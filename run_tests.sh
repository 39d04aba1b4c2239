#!/usr/bin/env bash
# The tests: lint, then pytest (unit tests and short end-to-end runs of the real configs). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
VENV_REQUIREMENTS=requirements-dev.txt source tools/venv.sh
ruff format --check .
ruff check .
python -m pytest -q "$@"
