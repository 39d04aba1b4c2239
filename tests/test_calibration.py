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
"""The new-label-map ceiling calibrated from a center's own maps, subject to subject, on both demo anatomies; the
protocol's preconditions checked before anything trains."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts.data.centers import center_subjects, read_label_maps
from scripts.data.checks import InputError, center_problems
from scripts.data.demo import make_demo_centers, mni152_slices, mni152_template_dir, procedural_anatomy
from scripts.data.label_maps import (
    DEFAULT_QUANTILE,
    LabelMapTooCloseError,
    calibrate_ceiling,
    check_far_from_sources,
    label_map_similarity,
    nearest_other_subject,
    new_label_maps,
)
from scripts.evaluation.memorisation import nearest_neighbours
from scripts.evaluation.protocol import WorkerRefusal, _worker_job
from scripts.visit import center_label_bank

REPO = Path(__file__).resolve().parents[1]
DEMO = {"relocatable": [3], "hosts": [1], "flip_axes": [1]}  # configs/demo.json's label_map_settings


def _has_mni152() -> bool:
    try:
        mni152_template_dir()
    except ModuleNotFoundError:
        return False
    return True


needs_mni152 = pytest.mark.skipif(not _has_mni152(), reason="the mni152 anatomy needs nilearn (requirements-demo.txt)")


def _procedural() -> tuple[torch.Tensor, list[str]]:
    """20 procedural 32x32 maps, one subject each (the procedural demo)."""
    maps = [procedural_anatomy(np.random.default_rng([11, i]), 32)["label"] for i in range(20)]
    return torch.stack([torch.from_numpy(m.astype(np.uint8))[None] for m in maps]), [f"s{i}" for i in range(20)]


def _mni152() -> tuple[torch.Tensor, list[str]]:
    """8 subjects x 3 neighbouring axial slices of one deformed MNI152 volume each, 32x32 (the realistic demo)."""
    maps, subjects = [], []
    for s in range(8):
        for piece in mni152_slices(np.random.default_rng([12, s]), 32, 3):
            maps.append(torch.from_numpy(piece["label"].astype(np.uint8))[None])
            subjects.append(f"case{s}")
    return torch.stack(maps), subjects


ANATOMIES = [pytest.param(_procedural, id="procedural"), pytest.param(_mni152, id="mni152", marks=needs_mni152)]


def test_nearest_neighbour_calibration_ignores_slices_of_the_same_subject():
    a = torch.zeros(3, 1, 8, 8, dtype=torch.uint8)
    a[0, 0, 1:7, 1:7] = 1
    a[1] = a[0]  # the neighbouring slice of the same patient: identical
    a[2, 0, 2:8, 2:8] = 1  # another patient: overlapping, not identical
    other = float(label_map_similarity(a[:1], a[2:]))
    nearest, per_class = nearest_other_subject(a, ["p", "p", "q"])
    assert nearest.tolist() == pytest.approx([other, other, other])
    assert per_class[1].tolist() == pytest.approx([other, other, other])
    assert nearest_other_subject(a)[0][0] == 1.0  # without subjects the twin slice is the nearest "patient"
    # the near-copy audit's real-to-real distances leave the same subject out too
    d = torch.tensor([[0.0, 0.1, 0.7], [0.1, 0.0, 0.6], [0.7, 0.6, 0.0]])
    assert nearest_neighbours(d, exclude_self=True, subjects=["p", "p", "q"])[0].tolist() == pytest.approx(
        [0.7, 0.6, 0.6]
    )
    assert nearest_neighbours(d, exclude_self=True)[0].tolist() == pytest.approx([0.1, 0.1, 0.6])


@needs_mni152
def test_on_multi_slice_data_the_same_subjects_slices_would_loosen_the_ceiling():
    maps, subjects = _mni152()
    by_subject, by_slice = calibrate_ceiling(maps, subjects), calibrate_ceiling(maps)
    assert by_subject.mean < by_slice.mean - 0.1  # a neighbouring slice is far closer than another patient


def test_a_center_of_one_subject_cannot_calibrate_and_says_what_to_do():
    maps, _ = _procedural()
    with pytest.raises(LabelMapTooCloseError, match="at least 2 subjects; .*explicit label_map_settings.ceiling"):
        new_label_maps(maps[:4], 2, subjects=["one"] * 4, **DEMO)
    assert len(new_label_maps(maps[:4], 2, subjects=["one"] * 4, ceiling=0.9, **DEMO).maps) == 2  # the override


@pytest.mark.parametrize("anatomy", ANATOMIES)
def test_the_calibrated_check_refuses_a_patients_own_map_and_a_lightly_deformed_copy(anatomy):
    maps, subjects = anatomy()
    ceiling = calibrate_ceiling(maps, subjects)
    assert ceiling.quantile == DEFAULT_QUANTILE and set(ceiling.per_class) == {1, 2, 3}
    light = {"rotate": 0.02, "scale": 0.02, "translate": 0.0, "elastic_magnitude": 0.01}
    for i in range(0, len(maps), 5):
        own = maps[i : i + 1]
        shifted = torch.roll(own, shifts=1, dims=-1)
        deformed = new_label_maps(own, 1, seed=i, ceiling=1.0, **light).maps  # lesions stay where they were
        for copy in (own, deformed):
            with pytest.raises(LabelMapTooCloseError, match="closer to a real source map than the ceiling allows"):
                check_far_from_sources(copy, maps, subjects=subjects)
        if bool((own == 3).any()):
            with pytest.raises(LabelMapTooCloseError, match="closer to a real source map than the ceiling allows"):
                check_far_from_sources(shifted, maps, subjects=subjects)
        else:
            # without a lesion, a copy shifted by one pixel (3 % of the side) may pass: registered lesion-free
            # patients are themselves that alike, so a rule calibrated on patients cannot tell it from another
            # patient (docs/privacy.md); it is never closer than the closest lesion-free patients are to another
            kind = [j for j in range(len(maps)) if not bool((maps[j] == 3).any())]
            nearest = nearest_other_subject(maps, subjects)[0][kind]
            assert float(label_map_similarity(shifted, own)) <= float(nearest.max())


@pytest.mark.parametrize("anatomy", ANATOMIES)
def test_the_calibrated_check_accepts_maps_as_far_from_every_patient_as_patients_are_from_each_other(anatomy):
    maps, subjects = anatomy()
    ceiling = calibrate_ceiling(maps, subjects)
    accepted = 0
    for i, s in enumerate(subjects):
        others = [j for j, t in enumerate(subjects) if t != s]
        # one patient's map, checked against every OTHER patient's: as far from them as patients are from each other
        try:
            check_far_from_sources(maps[i : i + 1], maps[others], ceiling)
            accepted += 1
        except LabelMapTooCloseError:
            pass
    # the median sets the mean's ceiling: about half the center's own patients are accepted against the others
    assert 0.3 <= accepted / len(maps) <= 0.55


@pytest.mark.parametrize("anatomy", ["procedural", pytest.param("mni152", marks=needs_mni152)])
def test_default_new_maps_are_made_for_the_bank_and_the_shareable_set_on_both_demo_anatomies(anatomy, tmp_path: Path):
    slices = 4 if anatomy == "mni152" else 1
    root = make_demo_centers(
        tmp_path / anatomy, num_centers=1, num_train=16, num_test=0, size=32, anatomy=anatomy, slices_per_subject=slices
    )
    folder = root / "center_a"
    subjects = center_subjects(folder)
    assert len(set(subjects)) == 16 // slices
    # the bank a visit carries (configs/demo.json's settings) ...
    bank, record = center_label_bank(folder, 2, [32, 32], 16, 0, "new", DEMO)
    assert bank.shape == (16, 1, 32, 32)
    assert record["quantile"] == DEFAULT_QUANTILE and "center_a_" not in json.dumps(record)  # no patient named
    # ... and the shareable set's maps, with the demo's settings and with none (configs/inference.json's default)
    maps = read_label_maps(folder, 2, [32, 32])[0]
    for settings in (DEMO, {}):
        made = new_label_maps(maps, 16, seed=1, subjects=subjects, **settings)
        assert len(made.maps) == 16
        assert bool((made.nearest_similarity <= made.ceiling.mean_for(made.maps)).all())


def test_a_subject_must_be_a_plain_name(tmp_path: Path):
    root = make_demo_centers(tmp_path / "d", num_centers=1, num_train=2, num_test=0, size=32)
    meta_path = root / "center_a" / "dataset.json"
    meta = json.loads(meta_path.read_text())
    meta["training"][1]["subject"] = "../case 1"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"'training' entry 1 has subject '\.\./case 1'; expected a plain name"):
        center_subjects(root / "center_a")
    assert any("expected a plain name" in p for p in center_problems(root / "center_a", 2, 1, 4, read_files=False))
    del meta["training"][1]["subject"]
    meta_path.write_text(json.dumps(meta))
    assert center_subjects(root / "center_a") == ["center_a_training_000", "#1"]  # no subject: its own


def _refused(*args: object) -> None:
    raise RuntimeError("Failed to evaluate ConfigExpression") from LabelMapTooCloseError("center x: no new map.")


def test_a_workers_refusal_comes_back_as_its_one_line_reason():
    class Job:
        train_generator = staticmethod(_refused)

    with pytest.raises(WorkerRefusal, match="^train_generator tdgan_bank: center x: no new map.$") as caught:
        _worker_job(Job(), "train_generator", ("tdgan_bank", 0, None))
    again = pickle.loads(pickle.dumps(caught.value))  # what the parent process receives
    assert isinstance(again, InputError) and str(again) == str(caught.value)


def test_the_protocol_refuses_before_training_when_a_methods_bank_cannot_be_made_in_one_line(
    demo_root: Path, tmp_path: Path
):
    out = tmp_path / "runs"
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        "configs/compare.json",
        "--meta_file",
        "configs/metadata.json",
        "--data_root",
        str(demo_root),
        "--output_dir",
        str(out),
        "--visit_overrides#spatial_size",
        "[32, 32]",
        "--visit_overrides#label_map_settings",
        "{'ceiling': 0.05}",  # no new map gets this far from every patient's: the bank cannot be made
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()
    assert last[-1].startswith("  method ") or last[-1].startswith("error: ")
    error = next(i for i, line in enumerate(last) if line.startswith("error: "))
    assert "Traceback (most recent call last)" not in done.stderr  # the refusal, not MONAI's wrapped traceback
    assert "the preconditions of the evaluation's methods; nothing was trained or written" in last[error]
    refused = "\n".join(last[error:])
    for method in ("tdgan_bank", "finetune", "asyndgan", "joint"):  # every method that carries a bank ...
        assert f"method {method}, seed 0, label bank: center center_a: the label bank cannot be made" in refused
    assert "method tdgan_local" not in refused  # ... and not local reminding, which carries none
    assert not (out / "seed0").exists()  # nothing trained
