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
"""A fresh copy of the bundle, as the zoo hands it out: synthesis runs with its defaults, from any directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from conftest import REPO

from scripts.data.demo import SAMPLE_LABEL_MAPS, write_sample_label_maps

SAMPLES = REPO / "models" / "sample_label_maps"


def _fresh_copy(root: Path) -> Path:
    """The bundle's files without anything a run or the demo writes (no data/, no output/)."""
    bundle = root / "bundle"
    for part in ("configs", "scripts", "models"):
        shutil.copytree(REPO / part, bundle / part, ignore=shutil.ignore_patterns("__pycache__"))
    return bundle


def test_no_workflow_config_has_an_initialize_section():
    # MONAI resolves a config's imports at its first evaluation; an `initialize` section is evaluated before
    # ConfigWorkflow.run() puts the bundle root on sys.path, so `$import scripts` would fail outside the bundle root
    found = [
        str(p.relative_to(REPO))
        for p in (REPO / "configs").rglob("*.json")
        if "initialize" in json.loads(p.read_text())
    ]
    assert not found, f"move these configs' initialize steps into their `setup` item (run's first step): {found}"


def test_inference_runs_with_its_defaults_from_a_fresh_copy_called_from_another_directory(tmp_path: Path):
    bundle = _fresh_copy(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json")]
    cmd += ["--bundle_root", str(bundle)]
    done = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((bundle / "output" / "synthetic" / "dataset.json").read_text())
    assert meta["label_source"] == "new" and meta["shareable"] is True
    assert [it["center"] for it in meta["training"]] == [
        c for c in ("center_a", "center_b", "center_c") for _ in "1234"
    ]
    image = nib.load(bundle / "output" / "synthetic" / meta["training"][0]["image"])
    assert image.shape[:2] == (64, 64) and float(np.asarray(image.dataobj).std()) > 0.01  # a generated image
    assert not (elsewhere / "output").exists() and list(elsewhere.iterdir()) == []  # nothing written to the cwd


def test_the_shipped_sample_label_maps_are_the_ones_their_function_makes(tmp_path: Path):
    made = write_sample_label_maps(tmp_path / "samples", **SAMPLE_LABEL_MAPS)
    shipped = sorted(p.relative_to(SAMPLES) for p in SAMPLES.rglob("*") if p.is_file())
    assert shipped == sorted(p.relative_to(made) for p in made.rglob("*") if p.is_file())
    assert len([p for p in shipped if p.suffix == ".gz"]) == 12
    for path in shipped:
        if path.suffix == ".json":
            assert json.loads((SAMPLES / path).read_text()) == json.loads((made / path).read_text()), path
        else:
            ours, theirs = nib.load(SAMPLES / path), nib.load(made / path)
            assert ours.shape == (64, 64) and ours.get_data_dtype() == np.uint8
            np.testing.assert_array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj))
            assert set(np.unique(np.asarray(ours.dataobj))) <= {0, 1, 2, 3}
    assert sum(p.stat().st_size for p in SAMPLES.rglob("*") if p.is_file()) < 64 * 1024
