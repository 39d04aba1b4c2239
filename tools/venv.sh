#!/usr/bin/env bash
# Create (or reuse) the bundle's virtual environment .venv with pinned requirements. Sourced by run_demo.sh (runtime
# requirements only: requirements.txt) and run_tests.sh (requirements-dev.txt: runtime + the optional demo and FL
# extras + test tools), which set VENV_REQUIREMENTS; reinstalls only when the chosen requirement files changed. The
# README's install line runs it directly (`VENV_REQUIREMENTS=requirements.txt bash tools/venv.sh`), then activates
# .venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
req="${VENV_REQUIREMENTS:-requirements-dev.txt}"
stamp="$root/.venv/.requirements.sha256"
hash="$(cat "$root"/requirements*.txt | sha256sum | cut -d' ' -f1)"
want="$req $hash"
have="$(cat "$stamp" 2>/dev/null || true)"
# requirements-dev.txt includes every other file: a venv made for the tests serves the demo as it is
if [ ! -x "$root/.venv/bin/python" ] || { [ "$have" != "$want" ] && [ "$have" != "requirements-dev.txt $hash" ]; }; then
    echo "[venv] installing the pinned requirements ($req) into $root/.venv ..."
    "$py" -m venv "$root/.venv"
    # pip byte-compiles one file at a time; compileall uses every core (a minute less of 2.7 on 2 cores). A file that
    # does not compile (some packages ship Python 2 test data) stays source, as with pip's own compile.
    "$root/.venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile -r "$root/$req"
    site="$("$root/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    "$root/.venv/bin/python" -m compileall -qq -j 0 "$site" || true
    echo "$want" > "$stamp"
fi
export PATH="$root/.venv/bin:$PATH"
