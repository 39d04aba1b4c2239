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
    vpy="$root/.venv/bin/python"
    # uv (pinned) installs the same pins faster than pip (the test venv: 18 s against 126 s, side by side), given
    # pip's own settings (index, extra indexes with pip's best-version rule, find-links, constraints); where uv cannot
    # be installed or cannot install them, pip does it.
    mapfile -t uv_args < <("$vpy" - <<'PY'
import ast, subprocess, sys
listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
flags = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links",
         "constraint": "--constraint"}
pairs = {}  # (flag, value) in pip's order, each once (pip lists a setting per scope it is set in)
for line in listed.splitlines():
    key, _, value = line.partition("=")
    flag = flags.get(key.rsplit(".", 1)[-1])
    for item in ast.literal_eval(value).split() if flag and value else []:
        pairs[flag, item] = None
args = [part for pair in pairs for part in pair]
if "--extra-index-url" in args:
    args += ["--index-strategy", "unsafe-best-match"]  # pip's rule: the best version over every index
print("\n".join(args))
PY
)
    if ! { "$vpy" -m pip install --quiet --disable-pip-version-check --no-compile "uv==0.13.10" &&
        "$root/.venv/bin/uv" pip install --quiet --python "$vpy" "${uv_args[@]}" -r "$root/$req"; }; then
        echo "[venv] uv could not install them; pip does ..."
        "$vpy" -m pip install --quiet --disable-pip-version-check --no-compile -r "$root/$req"
    fi
    # This project's machines set PYTHONDONTWRITEBYTECODE: compile once here, on every core. A file that does not
    # compile (some packages ship Python 2 test data) stays source, as with pip's own compile.
    site="$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    "$vpy" -m compileall -qq -j 0 "$site" || true
    echo "$want" > "$stamp"
fi
export PATH="$root/.venv/bin:$PATH"
