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
"""Audit before sharing (configs/audit.json): the README's command, run as written in a fresh copy on real NIfTI
folders, passes a set synthesised from the released weights and fails (status 3) a copy of the training images."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import META, REPO
from monai.bundle import ConfigWorkflow
from test_docs_commands import COMMANDS

from scripts.data.checks import InputError
from scripts.data.demo import make_demo_centers
from scripts.evaluation.sharing_audit import EXIT_NEAR_COPIES, audit_before_sharing

AUDIT = next(c for d, c in COMMANDS if d == "README.md" and "configs/audit.json" in c)
SYNTHETIC = "output/synthetic_mixture"
SITE = "data/demo/center_a"
OUT = "output/audit_site_a"


def _fresh_copy(root: Path) -> Path:
    """A fresh clone of the bundle under ``root``: the tracked parts, nothing a run writes."""
    root.mkdir()
    for part in ("configs", "scripts", "models"):
        (root / part).symlink_to(REPO / part)
    return root


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh copy with the site's center (8 training slices of 64x64, real NIfTI) at the README's ``--dataset_dir``
    and, at its ``--synthetic_dir``, a shareable set that the released weights synthesised from new label maps."""
    bundle = _fresh_copy(tmp_path_factory.mktemp("audit") / "bundle")
    make_demo_centers(bundle / "data" / "demo", num_centers=1, num_train=8, num_test=2, size=64, seed=0)
    workflow = ConfigWorkflow(
        config_file=str(REPO / "configs" / "inference.json"),
        meta_file=META,
        logging_file=False,
        workflow_type="infer",
        **{"bundle_root": str(bundle), "dataset_dir": str(bundle / SITE), "output_dir": str(bundle / SYNTHETIC)},
        device="cpu",
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return bundle


def _run_documented_audit(bundle: Path) -> subprocess.CompletedProcess:
    """The README's audit command, as written, from ``bundle`` (under the usual umask 022)."""
    tokens = shlex.split(AUDIT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    old = os.umask(0o022)
    try:
        return subprocess.run(
            [sys.executable, *tokens[1:]], cwd=bundle, env=env, capture_output=True, text=True, timeout=300
        )
    finally:
        os.umask(old)


def _tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def _owner_only(folder: Path) -> list[str]:
    return [
        f"{p} {oct(stat.S_IMODE(p.stat().st_mode))}"
        for p in [folder, *folder.rglob("*")]
        if stat.S_IMODE(p.stat().st_mode) != (0o700 if p.is_dir() else 0o600)
    ]


def test_the_documented_audit_passes_a_set_synthesised_from_new_label_maps_and_writes_only_its_output(site: Path):
    assert (f"--synthetic_dir {SYNTHETIC}", f"--dataset_dir {SITE}", f"--output_dir {OUT}") == tuple(
        re.findall(r"--(?:synthetic_dir|dataset_dir|output_dir) \S+", AUDIT)
    )
    inputs = {name: _tree(site / name) for name in (SYNTHETIC, SITE)}
    done = _run_documented_audit(site)
    assert done.returncode == 0, done.stderr[-3000:]
    out = site / OUT
    assert sorted(p.name for p in out.iterdir()) == ["audit.json", "nearest_pairs.png"]
    verdict = json.loads((out / "audit.json").read_text())
    synthetic = json.loads((site / SYNTHETIC / "dataset.json").read_text())
    assert verdict["verdict"] == "pass" and verdict["declared_shareable"] is True
    assert verdict["synthetic"] == synthetic["numTraining"] == 8 and verdict["audit"]["real"] == 8
    assert verdict["near_copy_rate"] <= verdict["max_near_copy_rate"] == 0.1
    pairs = verdict["audit"]["nearest_pairs"]
    assert len(pairs) == 8 and [p["distance"] for p in pairs] == sorted(p["distance"] for p in pairs)
    assert pairs[0]["distance"] > 0  # the generator's images are its own, not the patients'
    assert (out / "nearest_pairs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "pass" in done.stderr + done.stdout
    assert not _owner_only(out)
    assert {name: _tree(site / name) for name in (SYNTHETIC, SITE)} == inputs  # read only
    assert sorted(p.name for p in (site / "output").iterdir()) == ["audit_site_a", "synthetic_mixture"]


def test_the_documented_audit_fails_with_status_3_a_synthetic_folder_that_copies_the_training_images(
    site: Path, tmp_path: Path
):
    bundle = _fresh_copy(tmp_path / "bundle")
    (bundle / "data").symlink_to(site / "data")
    shutil.copytree(site / SITE, bundle / SYNTHETIC)  # the site's images under the synthetic set's name
    done = _run_documented_audit(bundle)
    assert done.returncode == EXIT_NEAR_COPIES == 3, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error: 8 of 8 synthetic images (100.0 %) are near copies")
    verdict = json.loads((bundle / OUT / "audit.json").read_text())
    assert verdict["verdict"] == "fail" and verdict["near_copy_rate"] == 1.0 and verdict["near_copies"] == 8
    assert all(p["near_copy"] and p["distance"] == 0 for p in verdict["audit"]["nearest_pairs"])
    assert {p["synthetic"] for p in verdict["audit"]["nearest_pairs"]} == {
        p["nearest_real"] for p in verdict["audit"]["nearest_pairs"]
    }
    assert (bundle / OUT / "nearest_pairs.png").is_file() and not _owner_only(bundle / OUT)


def test_an_audit_written_inside_the_set_it_audits_is_refused_before_anything_is_read(site: Path):
    inside = site / SYNTHETIC / "audit"
    with pytest.raises(InputError, match="inside synthetic_dir"):
        audit_before_sharing(site / SYNTHETIC, site / SITE, inside)
    with pytest.raises(InputError, match=r"max_near_copy_rate must be in \[0, 1\], got 5"):
        audit_before_sharing(site / SYNTHETIC, site / SITE, site / "output" / "elsewhere", max_near_copy_rate=5)
    assert not inside.exists() and not (site / "output" / "elsewhere").exists()
