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
"""tools/zoo_submission.py, the model card's "Submitting to the model zoo" command, run as documented: it writes the
submission folder with exactly the zoo's parts (no tests, dev tools, data or outputs), large_files.yml's sha256 is
that of the written weights, every zoo check passes on the written folder, a second run without --overwrite is
refused in one line and changes nothing, and weights that are not the listed ones are refused."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

TOOL = REPO / "tools" / "zoo_submission.py"
SCHEMA = REPO.parent / "shared" / "schemas" / "meta_schema_20240725.json"
TOP_LEVEL = {"configs", "scripts", "models", "large_files.yml", "docs", "LICENSE"}
CHECKS = {"verify_metadata", "verify_net_in_out", "ckpt_export", "import", "ruff"}

_spec = importlib.util.spec_from_file_location("zoo_submission", TOOL)
zoo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(zoo)


def _submit(output_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """The documented command from the repository root, without the test run's PYTHONPATH."""
    schema = SCHEMA if SCHEMA.is_file() else REPO / "tests" / "data" / "meta_schema_20240725.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "tools/zoo_submission.py", "--output_dir", str(output_dir), "--schema", str(schema), *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def submitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    output = tmp_path_factory.mktemp("zoo")
    return output, _submit(output)


def test_the_command_writes_the_zoo_folder_and_every_zoo_check_passes_on_it(submitted):
    output, done = submitted
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}"
    folder = output / zoo.bundle_name()
    assert folder.name == "tdgan_distributed_generator"  # metadata.json's "name", as a zoo folder name
    assert {p.name for p in output.iterdir()} == {folder.name}  # nothing else written (no partial folder left)
    assert {p.name for p in folder.iterdir()} == TOP_LEVEL
    assert not {"tests", "tools", "output", "data", ".ci", "run_tests.sh", "requirements-dev.txt"} & set(
        p.name for p in folder.iterdir()
    )
    assert not [p for p in folder.rglob("*") if p.name in ("__pycache__", ".ruff_cache") or p.suffix == ".pyc"]
    assert all(p.suffix == ".py" for p in (folder / "scripts").rglob("*") if p.is_file())
    repo_scripts = {str(p.relative_to(REPO)) for p in (REPO / "scripts").rglob("*.py") if "__pycache__" not in p.parts}
    written = {str(p.relative_to(folder)) for p in (folder / "scripts").rglob("*.py")}
    assert written == repo_scripts and "scripts/tools/export_generator.py" in written  # the package, user tools too
    assert not [p for p in folder.rglob("*") if p.name in ("benchmark_step.py", "reference_step.py", "machine.py")]
    docs = {p.name for p in (folder / "docs").iterdir()}
    assert {"README.md", "figures", "data_license.txt"} <= docs and not {"benchmark.md", "demo_tuning.md"} & docs
    for doc in (folder / "docs").rglob("*.md"):  # a link to a repository file the folder lacks became words
        source = (REPO / doc.relative_to(folder)).parent
        for match in zoo.LINK.finditer(doc.read_text()):
            target = match.group(3)
            if not re.match(r"[a-z]+:", target) and not (doc.parent / target).exists():
                assert not (source / target).exists(), f"{doc.relative_to(folder)} links {target}"
    assert (folder / "models" / "sample_label_maps" / "centers.json").is_file()

    weights = (folder / "models" / "model.pt").read_bytes()
    assert weights == (REPO / "models" / "model.pt").read_bytes()
    (entry,) = yaml.safe_load((folder / "large_files.yml").read_text())["large_files"]
    assert entry["path"] == "models/model.pt" and entry["hash_val"] == hashlib.sha256(weights).hexdigest()

    checks = dict(
        line[len("check ") :].split(": ", 1) for line in done.stdout.splitlines() if line.startswith("check ")
    )
    assert checks == dict.fromkeys(CHECKS, "pass"), done.stdout


def test_a_second_run_without_overwrite_is_refused_in_one_line_and_changes_nothing(submitted):
    output, first = submitted
    assert first.returncode == 0
    before = _snapshot(output)
    done = _submit(output, "--no_check")
    assert done.returncode == 2
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--overwrite" in lines[0], lines
    assert _snapshot(output) == before


def test_weights_that_are_not_the_listed_ones_are_refused(submitted, tmp_path: Path):
    output, first = submitted
    assert first.returncode == 0
    folder = output / zoo.bundle_name()
    copy = tmp_path / "copy"
    (copy / "models").mkdir(parents=True)
    shutil.copy(folder / "large_files.yml", copy)
    weights = (folder / "models" / "model.pt").read_bytes()
    (copy / "models" / "model.pt").write_bytes(weights[:-1] + bytes([weights[-1] ^ 1]))  # one bit changed
    with pytest.raises(zoo.Refused, match="is not large_files.yml's hash_val"):
        zoo.check_large_files(copy)
    (copy / "models" / "model.pt").unlink()
    with pytest.raises(zoo.Refused, match="does not hold"):
        zoo.check_large_files(copy)
    zoo.check_large_files(folder)  # the written folder's own weights pass


def test_a_user_doc_link_to_a_file_the_submission_does_not_hold_is_written_as_words(tmp_path: Path):
    """A link to a lab notebook (tools/docs/, not shipped) reads as the repository's path; other links stay links."""
    repo, folder = tmp_path / "repo", tmp_path / "folder"
    for path in ("tools/docs/benchmark.md", "docs/data.md", "docs/figures/a.png"):
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text("x")
    for path in ("docs/data.md", "docs/figures/a.png"):
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text("x")
    doc = folder / "docs" / "guide.md"
    doc.write_text(
        "See [benchmark.md](../tools/docs/benchmark.md), [the fast demo](../tools/docs/benchmark.md#the-fast-demo), "
        "[data](data.md#top), ![a figure](figures/a.png), [web](https://example.org) and [gone](gone.md).\n"
    )
    notes = zoo._links_as_words(folder, repo)
    assert doc.read_text() == (
        "See the repository's tools/docs/benchmark.md, the fast demo (the repository's tools/docs/benchmark.md), "
        "[data](data.md#top), ![a figure](figures/a.png), [web](https://example.org) and [gone](gone.md).\n"
    )
    assert notes == ["docs/guide.md: links to tools/docs/benchmark.md (not in the submission) written as words"]
    assert zoo._dangling_links(folder) == ["docs/guide.md links gone.md, which the submission does not hold"]
