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
"""The demo's real-anatomy source: the MNI152 template shipped in the nilearn wheel, deformed per subject."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import run_visit

from scripts.data import demo as demo_data
from scripts.data.demo import make_demo_centers, mni152_anatomy
from scripts.handoff import load_handoff

needs_nilearn = pytest.mark.skipif(
    importlib.util.find_spec("nilearn") is None, reason="nilearn (requirements-demo.txt) is not installed"
)


@needs_nilearn
def test_mni152_slices_are_real_anatomy_deformed_differently_per_subject():
    first = mni152_anatomy(np.random.default_rng(0), 64)
    again = mni152_anatomy(np.random.default_rng(0), 64)
    other = mni152_anatomy(np.random.default_rng(1), 64)
    assert all(np.array_equal(first[k], again[k]) for k in first)  # deterministic per seed
    assert not np.array_equal(first["label"], other["label"])  # another subject, another deformation
    for subject in (first, other):
        label = subject["label"]
        assert set(np.unique(label)) <= {0, 1, 2, 3} and 0.2 < np.mean(label > 0) < 0.8
        brain = label == 1
        assert np.mean(brain) > 3 * np.mean(label == 2) > 0  # parenchyma with ventricles and sulci in it
        # grey and white matter both present: the texture follows the template's tissue maps
        assert np.mean(subject["texture"][brain] > 0.3) > 0.1 and np.mean(subject["texture"][brain] < -0.3) > 0.1
        assert not (subject["skull"] & (label > 0)).any() and subject["skull"].any() and subject["scalp"].any()
    # the two hemispheres mirror each other roughly (real anatomy, not a random blob)
    label = mni152_anatomy(np.random.default_rng(2), 64)["label"]
    assert np.mean((label > 0) == (label > 0)[:, ::-1]) > 0.85


@needs_nilearn
def test_demo_centers_from_mni152_train_one_visit(tmp_path: Path):
    root = make_demo_centers(tmp_path / "demo", num_centers=2, num_train=4, num_test=0, size=32, anatomy="mni152")
    meta = json.loads((root / "center_a" / "dataset.json").read_text())
    assert "MNI152" in meta["description"]
    label = np.asarray(nib.load(str(root / "center_a" / meta["training"][0]["label"])).dataobj)
    assert label.shape == (32, 32) and {1, 2} <= set(np.unique(label))
    run_visit([root / "center_a"], tmp_path / "visit")
    assert load_handoff(tmp_path / "visit" / "handoff.pt").visits[0]["iterations"] == 4


@needs_nilearn
def test_a_bank_visit_runs_by_default_on_multi_slice_mni152_centers_and_records_its_ceiling(tmp_path: Path):
    root = make_demo_centers(
        tmp_path / "d", 1, num_train=8, num_test=0, size=32, anatomy="mni152", slices_per_subject=4
    )
    run_visit([root / "center_a"], tmp_path / "visit")  # bank reminding, new maps, the calibrated ceiling: defaults
    handoff = load_handoff(tmp_path / "visit" / "handoff.pt")
    assert handoff.label_bank["center_a"].shape[0] > 0
    record = handoff.visits[0]["label_bank"]["ceilings"]["center_a"]
    assert record["quantile"] == 0.5 and record["class_quantile"] == 0.95 and 0 < record["mean_foreground_dice"] < 1
    assert "training_00" not in json.dumps(handoff.visits)  # the rule and its values travel, never a subject


def test_mni152_without_nilearn_says_how_to_install_it_and_writes_nothing(tmp_path: Path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(demo_data.importlib.util, "find_spec", lambda n, *a: None if n == "nilearn" else real(n, *a))
    with pytest.raises(ModuleNotFoundError, match="nilearn is not installed.*requirements-demo.txt"):
        make_demo_centers(tmp_path / "demo", num_centers=1, num_train=1, num_test=0, size=32, anatomy="mni152")
    assert not (tmp_path / "demo").exists()
    with pytest.raises(ValueError, match="anatomy must be one of"):
        make_demo_centers(tmp_path / "demo", anatomy="atlas")


@needs_nilearn
def test_slices_per_subject_gives_neighbouring_slices_of_one_volume_split_by_subject(tmp_path: Path):
    from scripts.data.centers import read_label_maps
    from scripts.data.label_maps import label_map_similarity

    root = make_demo_centers(
        tmp_path / "d", 1, num_train=10, num_test=4, size=32, anatomy="mni152", slices_per_subject=4
    )
    meta = json.loads((root / "center_a" / "dataset.json").read_text())
    subjects = [e["subject"] for e in meta["training"]]
    assert subjects == [f"center_a_training_00{i}" for i in (0, 0, 0, 0, 1, 1, 1, 1, 2, 2)]  # the last one shorter
    assert {e["subject"] for e in meta["test"]} == {"center_a_test_000"}  # split by subject, never by slice
    assert json.loads((root / "prepare.json").read_text())["slices_per_subject"] == 4
    s = label_map_similarity(*(read_label_maps(root / "center_a", 2)[0],) * 2)
    same = torch.tensor([[a == b for b in subjects] for a in subjects]) & ~torch.eye(10, dtype=torch.bool)
    # a slice's neighbour of the same volume is far closer than any slice of another subject
    assert float(s[same].min()) > float(s[~same & ~torch.eye(10, dtype=torch.bool)].median())
    with pytest.raises(ValueError, match="needs a volumetric anatomy source"):
        make_demo_centers(tmp_path / "p", 1, num_train=4, num_test=0, size=32, slices_per_subject=2)
