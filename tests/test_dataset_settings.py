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
"""num_classes and image_channels are given once, in the centers' dataset.json: every workflow reads them from there,
and an explicit setting that contradicts it is refused."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import META, REPO, TINY, run_visit, segmentation_workflow, visit_workflow
from monai.bundle import ConfigWorkflow

from scripts.data.centers import dataset_setting
from scripts.data.checks import InputError
from scripts.evaluation.protocol import Evaluation
from scripts.handoff import load_handoff

LABELS = {"0": "background", "1": "cell", "2": "border"}
RGB = {"0": "red", "1": "green", "2": "blue"}
LOCAL = {"reminding_source": "local"}  # toy maps too alike for a bank of new maps; the bank is not under test here


def _rgb_center(folder: Path, seed: int, count: int = 6) -> Path:
    """A center of ``count`` 32x32 RGB images (stored as NIfTI's 5th axis) with 3-class label maps."""
    rng = np.random.default_rng(seed)
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    training = []
    yy, xx = np.mgrid[:32, :32]
    for i in range(count):
        r = np.hypot(yy - 16 - rng.integers(-4, 5), xx - 16 - rng.integers(-4, 5))
        label = np.where(r < 6 + i % 3, 1, np.where(r < 9 + i % 3, 2, 0)).astype(np.uint8)
        image = np.stack([0.2 + 0.3 * (label == c) + 0.05 * rng.random(label.shape) for c in (1, 2, 0)], -1)
        nib.save(
            nib.Nifti1Image(image[:, :, None, None].astype(np.float32), np.eye(4)), folder / "imagesTr" / f"{i}.nii.gz"
        )
        nib.save(nib.Nifti1Image(label, np.eye(4)), folder / "labelsTr" / f"{i}.nii.gz")
        training.append({"image": f"imagesTr/{i}.nii.gz", "label": f"labelsTr/{i}.nii.gz"})
    meta = {"labels": LABELS, "modality": RGB, "training": training, "test": training[:2]}
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module")
def rgb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two centers of 3-channel images with 3 classes, and centers.json."""
    root = tmp_path_factory.mktemp("rgb")
    for i, name in enumerate(("site_x", "site_y")):
        _rgb_center(root / name, seed=i)
    (root / "centers.json").write_text(json.dumps({"order": ["site_x", "site_y"]}))
    return root


def _reason(error: BaseException) -> str:
    while error is not None and not isinstance(error, InputError):
        error = error.__cause__ if error.__cause__ is not None else error.__context__
    assert isinstance(error, InputError)
    return str(error)


def _segmentation(dataset_dir: Path, out: Path, **override) -> ConfigWorkflow:
    return segmentation_workflow(dataset_dir, out, **{"val_fraction": 0, **override})


def test_a_visit_reads_3_classes_and_3_channels_from_dataset_json(rgb_root: Path, tmp_path: Path):
    run_visit([rgb_root / "site_x"], tmp_path / "visit", **LOCAL)  # no num_classes, no image_channels given
    network = load_handoff(tmp_path / "visit" / "handoff.pt").network
    assert network["num_classes"] == 3 and network["out_channels"] == 3


def test_the_sequence_passes_them_to_every_visit(rgb_root: Path, tmp_path: Path):
    workflow = ConfigWorkflow(
        config_file=str(REPO / "configs" / "train_sequential.json"),
        meta_file=META,
        logging_file=False,
        workflow_type=None,
        **{"bundle_root": str(REPO), "data_root": str(rgb_root), "output_dir": str(tmp_path)},
        **{f"visit_overrides#{k}": v for k, v in {**TINY, **LOCAL}.items()},
    )
    workflow.initialize()
    assert workflow.parser.get_parsed_content("visit_overrides")["num_classes"] == 3
    handoffs = workflow.run()[0]
    for handoff in handoffs:
        network = load_handoff(handoff).network
        assert network["num_classes"] == 3 and network["out_channels"] == 3


def test_segmentation_reads_them_too(rgb_root: Path, tmp_path: Path):
    workflow = _segmentation(rgb_root, tmp_path / "seg")
    network = workflow.parser.get_parsed_content("segmentation_network")
    logits = network(torch.zeros(1, 3, *TINY["spatial_size"]))
    assert logits.shape[1] == 3
    workflow.run()
    assert (tmp_path / "seg" / "segmentation.pt").is_file()


def test_the_protocol_gives_them_to_the_visits_and_the_segmentation(rgb_root: Path, tmp_path: Path):
    evaluation = Evaluation(
        rgb_root, tmp_path, tmp_path / "report", {"tdgan_bank": {"configs": []}}, "s", "i", "g", "m"
    )
    assert evaluation.visit_overrides["num_classes"] == evaluation.segmentation_overrides["num_classes"] == 3
    assert evaluation.visit_overrides["image_channels"] == evaluation.segmentation_overrides["image_channels"] == 3


def test_an_explicit_setting_that_contradicts_dataset_json_is_refused_in_one_line(rgb_root: Path, tmp_path: Path):
    meta = rgb_root / "site_x" / "dataset.json"
    with pytest.raises(Exception) as info:
        visit_workflow([rgb_root / "site_x"], tmp_path / "a", num_classes=4, **LOCAL).run()
    problems = _reason(info.value).splitlines()[1:]
    assert problems == [
        f"  {meta}: declares 3 classes (label values up to 2), but the configuration has num_classes=4; leave "
        'num_classes unset to read it from dataset.json, or declare every class under "labels".'
    ]
    with pytest.raises(Exception) as info:
        _segmentation(rgb_root / "site_x", tmp_path / "seg", image_channels=1).run()
    assert _reason(info.value).splitlines()[1:] == [
        f"  {meta}: declares 3 image channel(s) (modality {RGB}), but the configuration has image_channels=1; leave "
        "image_channels unset to read it from dataset.json, or declare one modality entry per image channel."
    ]
    assert not (tmp_path / "a").exists() and not (tmp_path / "seg").exists()


def test_centers_that_declare_different_classes_are_refused_in_one_line(rgb_root: Path, tmp_path: Path):
    other = _rgb_center(tmp_path / "site_z", seed=3)
    meta = json.loads((other / "dataset.json").read_text())
    meta["labels"] = {"0": "background", "1": "cell"}
    (other / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(InputError) as info:
        dataset_setting([rgb_root / "site_x", other], "num_classes", 4)
    assert str(info.value) == (
        f"the centers' dataset.json files declare different num_classes ({rgb_root / 'site_x' / 'dataset.json'}: 3, "
        f"{other / 'dataset.json'}: 2); one generator serves them all: make their labels agree, or visit them in "
        "separate sequences."
    )
    assert dataset_setting([rgb_root], "image_channels", 1) == 3  # a folder of centers stands for its centers
    assert dataset_setting([tmp_path / "nowhere"], "num_classes", 4) == 4  # nothing declared: the default
