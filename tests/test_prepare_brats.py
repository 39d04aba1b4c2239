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
"""BraTS preparation end to end: BraTS-named 3D NIfTI volumes in, per-center 2D slices out, and a visit on them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, run_visit

from scripts.data.checks import InputError
from scripts.data.prepare_brats import prepare_brats, slice_indices
from scripts.handoff import load_handoff

SHAPE = (32, 32, 24)


def _write_case(root: Path, case: str, rng: np.random.Generator) -> np.ndarray:
    """One BraTS-style case: a brain ellipsoid in four modalities, a tumour with the three sub-regions (1, 2, 4)."""
    x, y, z = np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")
    brain = ((x - 16) / 13) ** 2 + ((y - 16) / 14) ** 2 + ((z - 12) / 11) ** 2 < 1
    cx, cy, cz = rng.integers(12, 20), rng.integers(12, 20), rng.integers(9, 15)
    r = ((x - cx) / 5.0) ** 2 + ((y - cy) / 5.0) ** 2 + ((z - cz) / 6.0) ** 2
    seg = np.zeros(SHAPE, np.uint8)
    seg[(r < 1) & brain] = 2  # edema
    seg[(r < 0.5) & brain] = 4  # enhancing
    seg[(r < 0.15) & brain] = 1  # core
    folder = root / "HGG" / case
    folder.mkdir(parents=True)
    for i, modality in enumerate(("t1", "t1ce", "t2", "flair")):
        image = np.where(brain, 100.0 + 20 * i + 30 * (seg > 0) + rng.normal(0, 5, SHAPE), 0.0).astype(np.float32)
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(folder / f"{case}_{modality}.nii.gz"))
    nib.save(nib.Nifti1Image(seg, np.eye(4)), str(folder / f"{case}_seg.nii.gz"))
    return seg


@pytest.fixture(scope="module")
def brats(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """A tiny BraTS folder of 4 cases, and their segmentations."""
    root = tmp_path_factory.mktemp("brats")
    rng = np.random.default_rng(0)
    return root, {f"Brats18_X_{i}_1": _write_case(root, f"Brats18_X_{i}_1", rng) for i in range(4)}


def _cases(center: Path, split: str) -> set[str]:
    items = json.loads((center / "dataset.json").read_text())[split]
    return {Path(item["image"]).name.rsplit("_z", 1)[0] for item in items}


def test_slice_window_is_centred_on_the_tumour_and_drops_slices_with_few_tumour_pixels():
    pixels = np.array([0, 0, 3, 20, 40, 50, 40, 20, 9, 0, 0, 0])  # tumour on slices 2..8, centre 5
    assert slice_indices(pixels, window=20, min_tumour_pixels=10) == [3, 4, 5, 6, 7]
    assert slice_indices(pixels, window=1, min_tumour_pixels=10) == [4, 5, 6]
    assert slice_indices(pixels, window=4, min_tumour_pixels=0) == list(range(1, 10))
    assert slice_indices(np.zeros(5), 20, 10) == []


def test_prepare_brats_command_makes_centers_split_by_case_that_train_one_visit(brats, tmp_path: Path):
    root, segs = brats
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "scripts.data.prepare_brats", "--input_dir", str(root), "--output_dir", str(out)]
    cmd += ["--num_centers", "2", "--test_fraction", "0.5", "--modality", "flair", "--seed", "1"]
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "(3 classes, declared in dataset.json" in done.stdout

    order = json.loads((out / "centers.json").read_text())["order"]
    assert order == ["center_1", "center_2"]
    seen = set()
    for name in order:
        meta = json.loads((out / name / "dataset.json").read_text())
        assert meta["labels"] == {"0": "background", "1": "brain", "2": "tumour"}
        training, test = _cases(out / name, "training"), _cases(out / name, "test")
        assert len(training) == 1 and len(test) == 1 and not training & test  # split by case, never by slice
        seen |= training | test
        for item in meta["training"] + meta["test"]:
            case, z = Path(item["image"]).name.removesuffix(".nii.gz").rsplit("_z", 1)
            image = np.asarray(nib.load(str(out / name / item["image"])).dataobj)
            label = np.asarray(nib.load(str(out / name / item["label"])).dataobj)
            seg = segs[case][..., int(z)]
            assert image.shape == label.shape == SHAPE[:2]
            assert 0 <= image.min() and image.max() <= 1 and image[label == 0].max() == 0
            assert np.array_equal(label >= 2, seg > 0) and set(np.unique(label)) <= {0, 1, 2}
        kept = {
            (c, int(Path(i["image"]).name.removesuffix(".nii.gz").rsplit("_z", 1)[1]))
            for i in meta["training"] + meta["test"]
            for c in [Path(i["image"]).name.rsplit("_z", 1)[0]]
        }
        for case in training | test:
            expected = slice_indices(np.sum(segs[case] > 0, axis=(0, 1)), 20, 10)
            assert {z for c, z in kept if c == case} == set(expected) and expected
    assert seen == set(segs)
    record = json.loads((out / "prepare.json").read_text())
    assert record["modality"] == "flair" and set(record["centers"]) == set(order)

    # a handful of near-identical toy tumours: no new label map can be made far from all of them, so the bank
    # carries none (local reminding); the demo and real data use the default new-map bank
    run_visit([out / "center_1"], tmp_path / "visit", reminding_source="local")  # 3 classes: from dataset.json
    handoff = load_handoff(tmp_path / "visit" / "handoff.pt")
    assert handoff.network["num_classes"] == 3
    assert handoff.registry == [{"name": "center_1", "code": 0}] and handoff.visits[0]["iterations"] > 0


def test_a_centers_table_sets_centers_order_and_split_and_subregion_labels(brats, tmp_path: Path):
    root, segs = brats
    cases = sorted(segs)
    table = tmp_path / "institutions.csv"
    rows = [f"{cases[0]},site_b,training", f"{cases[1]},site_b,test", f"{cases[2]},site_a,training"]
    table.write_text("case,center,split\n" + "\n".join(rows) + "\n")  # cases[3] is not in the table: left out
    out = prepare_brats(root, tmp_path / "data", tumour="subregions", centers_table=str(table))
    assert json.loads((out / "centers.json").read_text())["order"] == ["site_b", "site_a"]
    assert _cases(out / "site_b", "training") == {cases[0]} and _cases(out / "site_b", "test") == {cases[1]}
    assert _cases(out / "site_a", "training") == {cases[2]} and _cases(out / "site_a", "test") == set()
    meta = json.loads((out / "site_b" / "dataset.json").read_text())
    assert len(meta["labels"]) == 5
    values = set()
    for item in meta["training"]:
        label = np.asarray(nib.load(str(out / "site_b" / item["label"])).dataobj)
        values |= set(np.unique(label).tolist())
    assert {2, 3, 4} <= values <= {0, 1, 2, 3, 4}


def test_bad_brats_cases_are_all_reported_and_leave_no_output(brats, tmp_path: Path):
    root, segs = brats
    bad = tmp_path / "bad"
    rng = np.random.default_rng(5)
    seg = _write_case(bad, "Case_A", rng)
    seg[seg == 4] = 3  # not a BraTS label
    nib.save(nib.Nifti1Image(seg, np.eye(4)), str(bad / "HGG" / "Case_A" / "Case_A_seg.nii.gz"))
    _write_case(bad, "Case_B", rng)
    (bad / "HGG" / "Case_B" / "Case_B_t2.nii.gz").unlink()
    _write_case(bad, "Case_C", rng)
    nib.save(
        nib.Nifti1Image(np.zeros((32, 32, 20), np.float32), np.eye(4)), str(bad / "HGG" / "Case_C" / "Case_C_t2.nii.gz")
    )
    with pytest.raises(InputError) as info:
        prepare_brats(bad, tmp_path / "data", num_centers=1, test_fraction=0.0)
    message = str(info.value)
    assert f"{bad / 'HGG' / 'Case_A' / 'Case_A_seg.nii.gz'}: label values [3] are not BraTS labels" in message
    assert f"{bad / 'HGG' / 'Case_B' / 'Case_B_t2.nii.gz'}: not found" in message
    assert (
        f"{bad / 'HGG' / 'Case_C' / 'Case_C_seg.nii.gz'}: shape (32, 32, 24) differs from Case_C_t2.nii.gz's" in message
    )
    assert not (tmp_path / "data").exists() and [p.name for p in tmp_path.iterdir()] == ["bad"]

    cmd = [
        sys.executable,
        "-m",
        "scripts.data.prepare_brats",
        "--input_dir",
        str(bad),
        "--output_dir",
        str(tmp_path / "d"),
    ]
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"  {bad / 'HGG' / 'Case_B' / 'Case_B_t2.nii.gz'}: not found" in done.stderr
    assert not (tmp_path / "d").exists()
