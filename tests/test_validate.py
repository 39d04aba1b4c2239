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
"""Bad inputs stop the real workflows before anything is trained or written, with one line per problem."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import META, REPO, TINY, run_visit, visit_workflow
from monai.bundle import ConfigWorkflow

from scripts.data.checks import InputError

SEQUENTIAL = str(REPO / "configs" / "train_sequential.json")


def _messages(err: BaseException | None) -> str:
    """All messages along an exception's cause chain (the bundle's config parser wraps the original error)."""
    chain = []
    while err is not None:
        chain.append(str(err))
        err = err.__cause__
    return "\n".join(chain)


def _entry(center: Path, i: int = 0) -> dict[str, str]:
    return json.loads((center / "dataset.json").read_text())["training"][i]


def _save(array: np.ndarray, path: Path) -> None:
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))


def _missing_image(center: Path) -> tuple[str, str]:
    path = center / _entry(center)["image"]
    path.unlink()
    return str(path), "not found; the image file is listed in"


def _unreadable_label(center: Path) -> tuple[str, str]:
    path = center / _entry(center)["label"]
    path.write_bytes(b"this is not a NIfTI file")
    return str(path), "unreadable label file"


def _shape_mismatch(center: Path) -> tuple[str, str]:
    path = center / _entry(center)["label"]
    _save(np.zeros((16, 32), np.uint8), path)
    return str(path), "label shape (16, 32) differs from its image's (32, 32)"


def _undeclared_label(center: Path) -> tuple[str, str]:
    path = center / _entry(center)["label"]
    label = np.asarray(nib.load(str(path)).dataobj).copy()
    label[0, 0] = 7
    _save(label, path)
    return str(path), "label values [7] are not declared in"


def _nan_intensity(center: Path) -> tuple[str, str]:
    path = center / _entry(center, 1)["image"]
    image = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32).copy()
    image[3, 4], image[5, 6] = np.nan, np.inf
    _save(image, path)
    return str(path), "2 NaN/Inf intensities; expected finite values only"


def _empty_training(center: Path) -> tuple[str, str]:
    meta = json.loads((center / "dataset.json").read_text())
    meta["training"] = []
    (center / "dataset.json").write_text(json.dumps(meta))
    return str(center / "dataset.json"), "the 'training' list is empty"


def _wrong_spatial_dims(center: Path) -> tuple[str, str]:
    path = center / _entry(center)["image"]
    _save(np.ones((32, 32, 4), np.float32), path)
    return str(path), "image of shape (32, 32, 4) with 1 channel(s); expected 2 spatial dimensions and image_channels=1"


def _wrong_channels(center: Path) -> tuple[str, str]:
    path = center / _entry(center)["image"]
    _save(np.ones((32, 32, 1, 1, 3), np.float32), path)  # a 2D image with 3 channels (NIfTI's 5th axis)
    return str(path), "image of shape (32, 32) with 3 channel(s); expected 2 spatial dimensions and image_channels=1"


def _labels_beyond_num_classes(center: Path) -> tuple[str, str]:
    meta = json.loads((center / "dataset.json").read_text())
    meta["labels"]["5"] = "extra"
    (center / "dataset.json").write_text(json.dumps(meta))
    return str(center / "dataset.json"), "declares label values [5], but the configuration has num_classes=4"


BAD_INPUTS: dict[str, Callable[[Path], tuple[str, str]]] = {
    "missing_file": _missing_image,
    "unreadable_file": _unreadable_label,
    "shape_mismatch": _shape_mismatch,
    "undeclared_label_value": _undeclared_label,
    "nan_inf_intensity": _nan_intensity,
    "empty_training_list": _empty_training,
    "spatial_dims_disagree": _wrong_spatial_dims,
    "channels_disagree": _wrong_channels,
    "labels_beyond_num_classes": _labels_beyond_num_classes,
}
SETTINGS = {"labels_beyond_num_classes": {"num_classes": 4}}
"""Settings given explicitly for a case (by default num_classes is read from the dataset.json under test)."""


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_a_visit_on_bad_center_data_stops_before_writing_with_the_file_and_the_problem(
    demo_root: Path, tmp_path: Path, kind: str
):
    center = tmp_path / "center_a"
    shutil.copytree(demo_root / "center_a", center)
    path, problem = BAD_INPUTS[kind](center)
    out = tmp_path / "out"
    with pytest.raises(Exception) as info:
        visit_workflow([center], out, **SETTINGS.get(kind, {})).run()
    message = _messages(info.value)
    lines = [ln for ln in message.splitlines() if problem in ln]
    assert lines, message
    assert all(ln.strip().startswith(path) for ln in lines), lines  # each line starts with the file it is about
    assert "nothing was trained or written" in message
    assert not out.exists()  # not even the TensorBoard folder


def test_every_problem_is_reported_at_once_one_line_each(demo_root: Path, tmp_path: Path):
    center = tmp_path / "center_a"
    shutil.copytree(demo_root / "center_a", center)
    found = [_missing_image(center), _nan_intensity(center), _labels_beyond_num_classes(center)]
    with pytest.raises(Exception) as info:
        visit_workflow([center], tmp_path / "out", num_classes=4).run()
    error = info.value
    while error is not None and not isinstance(error, InputError):
        error = error.__cause__
    assert isinstance(error, InputError)
    lines = str(error).splitlines()
    assert lines[0].startswith("3 problem(s) with the inputs of this visit")
    assert sorted(ln.strip().split(": ")[0] for ln in lines[1:]) == sorted(path for path, _ in found)
    for path, problem in found:
        assert any(ln.strip().startswith(f"{path}: ") and problem in ln for ln in lines[1:]), (path, problem)


@pytest.mark.parametrize("reminding_source", ["bank", "local"])  # local: no label bank to tell the size by
def test_a_handoff_recorded_at_another_spatial_size_is_refused_before_training(
    demo_root: Path, tmp_path: Path, reminding_source: str
):
    run_visit([demo_root / "center_a"], tmp_path / "a", reminding_source=reminding_source)
    handoff = tmp_path / "a" / "handoff.pt"
    out = tmp_path / "b"
    with pytest.raises(Exception) as info:
        visit_workflow([demo_root / "center_b"], out, handoff_in=handoff, spatial_size=[64, 64]).run()
    assert (
        f"hand-off {handoff}: generator settings do not match: spatial_size=[32, 32] in the hand-off but [64, 64] in "
        "this configuration" in _messages(info.value)
    )
    assert not out.exists()


def _sequence(root: Path, out: Path, **override) -> ConfigWorkflow:
    keys = {f"visit_overrides#{k}": v for k, v in {**TINY, **override}.items()}
    return ConfigWorkflow(
        config_file=SEQUENTIAL,
        meta_file=META,
        logging_file=False,
        workflow_type=None,
        **{"bundle_root": str(REPO), "data_root": str(root), "output_dir": str(out), **keys},
    )


def test_centers_in_centers_json_without_a_folder_are_reported_with_the_other_problems_before_any_visit(
    demo_root: Path, tmp_path: Path
):
    root = tmp_path / "data"
    shutil.copytree(demo_root, root)
    (root / "centers.json").write_text(json.dumps({"order": ["center_a", "center_x", "center_b", "center_y"]}))
    path, problem = _nan_intensity(root / "center_b")  # reported together with the missing folders
    with pytest.raises(Exception) as info:
        workflow = _sequence(root, tmp_path / "out")
        workflow.initialize()
        workflow.run()
    message = _messages(info.value)
    assert f"{root / 'centers.json'}: center 'center_x' has no folder {root / 'center_x'}" in message
    assert f"{root / 'centers.json'}: center 'center_y' has no folder {root / 'center_y'}" in message
    assert f"{path}: {problem}" in message and message.count("\n  ") == 3
    assert not (tmp_path / "out").exists()


def test_a_resumed_sequence_with_a_bad_later_center_keeps_its_handoffs_and_writes_nothing(
    demo_root: Path, tmp_path: Path
):
    root = tmp_path / "data"
    shutil.copytree(demo_root, root)
    out = tmp_path / "out"
    handoff = out / "handoffs" / "visit01_center_a.pt"
    run_visit([root / "center_a"], out / "visits" / "visit01_center_a", handoff_out=str(handoff))
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*") if p.is_file()}
    path, problem = _undeclared_label(root / "center_c")
    with pytest.raises(Exception) as info:
        workflow = _sequence(root, out)
        workflow.initialize()
        workflow.run()
    message = _messages(info.value)
    assert f"{path}: {problem}" in message
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*") if p.is_file()}
    assert after == before  # the first visit's hand-off and logs are untouched, nothing new appeared

    # with the data repaired, the same sequence resumed with other network settings is refused for its hand-off
    shutil.copytree(demo_root / "center_c", root / "center_c", dirs_exist_ok=True)
    with pytest.raises(Exception) as info:
        workflow = _sequence(root, out, ngf=16)
        workflow.initialize()
        workflow.run()
    assert f"hand-off {handoff}: generator settings do not match: ngf=8 in the hand-off but 16" in _messages(info.value)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*") if p.is_file()} == before


def test_the_command_line_prints_one_line_per_problem_and_fails(demo_root: Path, tmp_path: Path):
    center = tmp_path / "center_a"
    shutil.copytree(demo_root / "center_a", center)
    path, problem = _nan_intensity(center)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(REPO / "configs" / "train.json")]
    cmd += ["--meta_file", META, "--bundle_root", str(REPO), "--dataset_dir", str(center)]
    cmd += ["--output_dir", str(tmp_path / "out"), "--spatial_size", "[32,32]", "--ngf", "8", "--device", "cpu"]
    cmd += ["--epochs_constant", "1", "--epochs_decay", "1"]  # should the check fail to stop it: a short run
    done = subprocess.run(
        cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode != 0
    assert f"  {path}: {problem}" in done.stderr
    assert not (tmp_path / "out").exists()
