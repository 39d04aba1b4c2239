# Copyright (c) 2026 The TDGAN bundle authors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Write the folder a MONAI model-zoo submission is, and run on it the checks the zoo's CI runs.

    python tools/zoo_submission.py --output_dir <dir>

writes ``<dir>/<name>/`` (``<name>``: configs/metadata.json's "name" in snake case, else ``tdgan_bundle``) holding
configs/, scripts/ (the package, ``*.py`` only, its user tools in scripts/tools/ included), models/model.pt,
models/sample_label_maps/, large_files.yml (its sha256 checked against the written weights), docs/ (the model card and
user docs; a link of theirs to a file the folder does not hold, such as the lab notebooks of tools/docs/, is written as
words: "the repository's tools/docs/benchmark.md") and LICENSE; no tests, tools/ (benchmarks, profilers, trials), data
or outputs. Then (``--no_check`` skips it), with that folder as the working directory and ``--bundle_root``:
verify_metadata against the zoo's schema, verify_net_in_out, ckpt_export, the package importing on its own, and ruff.
One line per check, ``check <name>: pass|fail``; a check whose output says "deprecated" or "replacing" fails (MONAI read
the metadata other than as written). Exit 0: written and every check passed; 1: a check failed; 2: refused (nothing
changed). Writes nothing outside ``--output_dir`` except the TorchScript file of ckpt_export, in a temporary folder
removed afterwards.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_NAME = "tdgan_bundle"
DEFAULT_SCHEMA = REPO.parent / "shared" / "schemas" / "meta_schema_20240725.json"
TOP_LEVEL = {"configs", "scripts", "models", "large_files.yml", "docs", "LICENSE"}
"""Everything the submission folder holds at its top level."""
WARNING = re.compile(r"deprecated|replacing", re.I)


class Refused(Exception):
    """A one-line reason not to write (or not to keep) the submission folder."""


def bundle_name(repo: Path = REPO) -> str:
    """configs/metadata.json's "name" as a zoo folder name ("TDGAN distributed generator" ->
    ``tdgan_distributed_generator``, as "Spleen CT segmentation" is ``spleen_ct_segmentation``)."""
    try:
        name = json.loads((repo / "configs" / "metadata.json").read_text()).get("name")
    except (OSError, ValueError):
        name = None
    slug = re.sub(r"[^0-9a-z]+", "_", str(name or "").lower()).strip("_")
    return slug or DEFAULT_NAME


def _shipped_docs(repo: Path) -> list[Path]:
    """The model card and user docs (docs/; the lab notebooks are in tools/docs/, which is not shipped)."""
    docs = repo / "docs"
    files = sorted(docs.glob("*.md"))
    files += [p for p in [docs / "data_license.txt"] if p.is_file()]
    files += sorted(p for p in (docs / "figures").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return files


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def write_folder(dest: Path, repo: Path = REPO) -> list[str]:
    """Copy the submission's files from ``repo`` into ``dest`` (a new folder); returns notes for the user."""
    notes = []
    configs = repo / "configs"
    for pattern in ("*.json", "*.yaml", "logging.conf"):
        for src in sorted(configs.glob(pattern)):
            _copy(src, dest / "configs" / src.name)
    for src in sorted((configs / "baselines").rglob("*")):
        if src.is_file():
            _copy(src, dest / src.relative_to(repo))
    for src in sorted((repo / "scripts").rglob("*.py")):  # the package whole: scripts/tools/ holds user commands
        rel = src.relative_to(repo)
        if "__pycache__" not in rel.parts:
            _copy(src, dest / rel)
    models = repo / "models"
    if not (models / "model.pt").is_file():
        raise Refused(f"{models / 'model.pt'} does not exist: export the released weights first (docs/README.md)")
    _copy(models / "model.pt", dest / "models" / "model.pt")
    for src in sorted((models / "sample_label_maps").rglob("*")):
        if src.is_file():
            _copy(src, dest / src.relative_to(repo))
    _copy(repo / "large_files.yml", dest / "large_files.yml")
    for src in _shipped_docs(repo):
        _copy(src, dest / src.relative_to(repo))
    _copy(repo / "LICENSE", dest / "LICENSE")
    notes += _links_as_words(dest, repo)
    notes += _dangling_links(dest)
    return notes


def check_large_files(folder: Path) -> list[dict]:
    """Every entry of ``folder``/large_files.yml names a file of ``folder`` whose hash is the listed one; raises
    :class:`Refused` otherwise. Returns the entries."""
    listing = folder / "large_files.yml"
    try:
        entries = (yaml.safe_load(listing.read_text()) or {}).get("large_files") or []
    except (OSError, yaml.YAMLError) as e:
        raise Refused(f"{listing} cannot be read: {e}".replace("\n", " ")) from e
    if not entries:
        raise Refused(f"{listing} lists no large file (models/model.pt with its sha256)")
    for entry in entries:
        path = folder / str(entry.get("path", ""))
        if not path.is_file():
            raise Refused(f"large_files.yml lists {entry.get('path')!r}, which the folder does not hold")
        kind = str(entry.get("hash_type") or "sha256").lower()
        if kind not in hashlib.algorithms_available:
            raise Refused(f"large_files.yml: unknown hash_type {kind!r} for {entry['path']}")
        digest = hashlib.new(kind)
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != str(entry.get("hash_val", "")).lower():
            raise Refused(
                f"{entry['path']}: {kind} {digest.hexdigest()} is not large_files.yml's hash_val "
                f"{entry.get('hash_val')!r} (new weights: update large_files.yml)"
            )
    return entries


LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)#\s]+)(#[^)]*)?\)")
"""A Markdown link or image: (``!`` or nothing, text, target, ``#anchor`` or None)."""


def _links_as_words(folder: Path, repo: Path = REPO) -> list[str]:
    """Rewrite, in the written docs, each link to a file of the repository that the folder does not hold (a lab
    notebook of tools/docs/, say) as words: ``[benchmark.md](../tools/docs/benchmark.md)`` becomes "the repository's
    tools/docs/benchmark.md"; a link with other text keeps it: "the fast demo (the repository's ...)". A user of the
    downloaded bundle then reads where the file is instead of following a link that breaks. Returns one note per
    rewritten doc."""
    notes = []
    root = repo.resolve()
    for doc in sorted((folder / "docs").rglob("*.md")):
        source = (repo / doc.relative_to(folder)).parent
        rewritten: list[str] = []

        def words(match: re.Match, doc: Path = doc, source: Path = source, rewritten: list[str] = rewritten) -> str:
            bang, text, target = match.group(1), match.group(2), match.group(3)
            if re.match(r"[a-z]+:", target) or (doc.parent / target).exists():
                return match.group(0)
            in_repo = (source / target).resolve()
            if not in_repo.is_relative_to(root) or not in_repo.exists():
                return match.group(0)  # broken in the repository too: _dangling_links reports it
            rel = in_repo.relative_to(root).as_posix()
            rewritten.append(rel)
            plain = text.strip().strip("`")
            if not bang and plain and (plain == Path(target).name or rel.endswith(plain)):
                return f"the repository's {rel}"
            return f"{text} (the repository's {rel})"

        text = doc.read_text(errors="replace")
        new = LINK.sub(words, text)
        if new != text:
            doc.write_text(new)
            listed = ", ".join(sorted(set(rewritten)))
            notes.append(f"{doc.relative_to(folder)}: links to {listed} (not in the submission) written as words")
    return notes


def _dangling_links(folder: Path) -> list[str]:
    """Relative Markdown links of the written docs that point at no file of the folder (notes, not failures)."""
    notes = []
    for doc in sorted((folder / "docs").rglob("*.md")):
        for target in sorted({m.group(3) for m in LINK.finditer(doc.read_text(errors="replace"))}):
            if re.match(r"[a-z]+:", target) or (doc.parent / target).exists():
                continue
            notes.append(f"{doc.relative_to(folder)} links {target}, which the submission does not hold")
    return notes


def _env() -> dict[str, str]:
    """The checks' environment: the folder's own package only (no PYTHONPATH), no bytecode written into it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _run(cmd: list[str], cwd: Path) -> tuple[bool, str]:
    try:
        done = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    text = done.stdout + done.stderr
    warned = [line for line in text.splitlines() if WARNING.search(line)]
    if warned:
        return False, "MONAI read the bundle other than as written:\n" + "\n".join(warned)
    return done.returncode == 0, text


def _imports_check(folder: Path) -> tuple[bool, str]:
    """``import scripts`` with the folder as working directory, every ``scripts.*`` module its files import is in the
    folder, and none imports the repository's ``tools`` (not shipped)."""
    ok, text = _run([sys.executable, "-c", "import scripts"], folder)
    if not ok:
        return False, text
    missing = set()
    for path in sorted((folder / "scripts").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                parts = name.split(".")
                if parts[0] == "tools":
                    missing.add(
                        f"{path.relative_to(folder)} imports {name}, from the repository's tools/ (not shipped)"
                    )
                if parts[0] != "scripts":
                    continue
                base = folder.joinpath(*parts)
                if not (base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()):
                    missing.add(f"{path.relative_to(folder)} imports {name}")
    return not missing, "\n".join(sorted(missing))


def _ruff() -> str | None:
    local = Path(sys.executable).parent / "ruff"
    return str(local) if local.is_file() else shutil.which("ruff")


def run_checks(folder: Path, schema: Path) -> list[tuple[str, bool, str]]:
    """The zoo CI's checks on ``folder``, as tests/test_bundle.py and tests/test_zoo.py run them on the repository:
    (name, passed, output)."""
    results = []
    bundle = [sys.executable, "-m", "monai.bundle"]
    common = ["--net_id", "network_def", "--meta_file", "configs/metadata.json"]
    common += ["--config_file", "configs/inference.json", "--bundle_root", str(folder)]
    if schema.is_file():
        cmd = [*bundle, "verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", str(schema)]
        results.append(("verify_metadata", *_run(cmd, folder)))
    else:
        results.append(("verify_metadata", False, f"schema {schema} is absent: pass --schema <meta_schema json>"))
    results.append(("verify_net_in_out", *_run([*bundle, "verify_net_in_out", *common], folder)))
    with tempfile.TemporaryDirectory(prefix="zoo_ckpt_export_") as tmp:
        ts = Path(tmp) / "model.ts"
        cmd = [*bundle, "ckpt_export", *common, "--filepath", str(ts), "--ckpt_file", "models/model.pt"]
        ok, text = _run(cmd, folder)
        if ok and not ts.is_file():
            ok, text = False, f"{text}\nno {ts} written"
        results.append(("ckpt_export", ok, text))
    results.append(("import", *_imports_check(folder)))
    ruff = _ruff()
    if ruff is None:
        results.append(("ruff", None, "ruff is not installed: code format not checked"))
    else:
        config = ["--no-cache", "--config", str(REPO / "pyproject.toml")]  # line length 120, as the zoo's
        fmt_ok, fmt = _run([ruff, "format", "--check", *config, "scripts"], folder)
        lint_ok, lint = _run([ruff, "check", *config, "scripts"], folder)
        results.append(("ruff", fmt_ok and lint_ok, f"{fmt}\n{lint}"))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, required=True, help="where <name>/ is written")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing <output_dir>/<name>/")
    parser.add_argument("--check", dest="check", action="store_true", default=True, help="run the checks (default)")
    parser.add_argument("--no_check", dest="check", action="store_false", help="write the folder only")
    parser.add_argument(
        "--schema", type=Path, default=DEFAULT_SCHEMA, help=f"the zoo's metadata schema (default {DEFAULT_SCHEMA})"
    )
    args = parser.parse_args(argv)

    output = args.output_dir.resolve()
    target = output / bundle_name()
    staging = output / f".{target.name}.partial"
    try:
        for part in ("configs", "scripts", "models", "docs"):
            if target.is_relative_to(REPO / part):
                raise Refused(f"--output_dir {args.output_dir} lies inside the bundle's {part}/, which it copies")
        if target.is_symlink() or (target.exists() and not args.overwrite):
            raise Refused(f"{target} already exists (pass --overwrite to replace it)")
        if staging.exists() or staging.is_symlink():
            raise Refused(f"{staging} exists (left by an interrupted run?): remove it")
        output.mkdir(parents=True, exist_ok=True)
        try:  # written beside the target, checked, then moved in place: a refusal leaves nothing changed
            notes = write_folder(staging)
            entries = check_large_files(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except Refused as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    print(f"wrote {target}")
    for entry in entries:
        if not entry.get("url"):
            notes.append(f"large_files.yml: {entry['path']} has no url yet: on release set it to the weights' address")
    for note in notes:
        print(f"note: {note}")
    if not args.check:
        return 0
    failed = False
    for name, ok, text in run_checks(target, args.schema.resolve()):
        if ok is None:
            print(f"check {name}: skipped ({text})")
            continue
        print(f"check {name}: {'pass' if ok else 'fail'}")
        if not ok:
            failed = True
            print("\n".join(f"    {line}" for line in text.strip().splitlines()[-25:]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
