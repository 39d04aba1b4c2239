#!/usr/bin/env bash
# Create (or reuse) the bundle's virtual environment .venv with the pinned requirements.
# Sourced by run_demo.sh and run_tests.sh; reinstalls only when a requirements file changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
stamp="$root/.venv/.requirements.sha256"
want="$(cat "$root/requirements.txt" "$root/requirements-dev.txt" "$root/requirements-fl.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$root/.venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[venv] installing the pinned requirements into $root/.venv ..."
    "$py" -m venv "$root/.venv"
    "$root/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/requirements-dev.txt"
    echo "$want" > "$stamp"
fi
export PATH="$root/.venv/bin:$PATH"
