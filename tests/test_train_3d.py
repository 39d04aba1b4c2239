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
"""End-to-end test of configs/train_3d.json: two tiny visits on 3D demo volumes, the second reminding the first."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import pytest
import torch
from conftest import META, REPO, TRAIN
from monai.bundle import ConfigWorkflow

from scripts.data.demo import make_demo_centers
from scripts.handoff import load_handoff
from scripts.networks import TDGANGenerator, encode_condition

TRAIN_3D = str(REPO / "configs" / "train_3d.json")
SIZE = 32  # the smallest cube the 3-layer PatchGAN takes
# the 3D override's shapes, shrunk: 32^3 volumes, 4-channel networks, 2 epochs of 2 steps at batch 1
TINY_3D = {
    "spatial_size": [SIZE] * 3,
    "ngf": 4,
    "num_blocks": 1,
    "ndf": 4,
    "epochs_constant": 1,
    "epochs_decay": 1,
    "label_bank_size": 2,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny 3D demo centers of 2 training volumes (32^3) each."""
    return make_demo_centers(
        tmp_path_factory.mktemp("demo3d"), num_centers=2, num_train=2, num_test=0, size=SIZE, volumetric=True
    )


def _visit_3d(center: Path, out: Path, handoff_in: Path | None = None) -> None:
    workflow = ConfigWorkflow(
        config_file=[TRAIN, TRAIN_3D],
        meta_file=META,
        logging_file=False,
        workflow_type="train",
        bundle_root=str(REPO),
        dataset_dir=str(center),
        center_dirs=[str(center)],
        output_dir=str(out),
        handoff_in=str(handoff_in) if handoff_in else None,
        **TINY_3D,
    )
    workflow.initialize()
    assert not workflow.check_properties()
    workflow.run()
    workflow.finalize()


@pytest.mark.slow
def test_3d_override_trains_volumetric_networks_and_hands_off_a_3d_generator(volumes: Path, tmp_path: Path):
    image = nib.load(volumes / "center_a" / "imagesTr" / "center_a_000.nii.gz")
    assert image.shape == (SIZE, SIZE, SIZE)  # the visit reads real 3D NIfTI volumes

    _visit_3d(volumes / "center_a", tmp_path / "a")
    _visit_3d(volumes / "center_b", tmp_path / "b", handoff_in=tmp_path / "a" / "handoff.pt")

    handoff = load_handoff(tmp_path / "b" / "handoff.pt")
    assert handoff.network["spatial_dims"] == 3 and handoff.network["ngf"] == TINY_3D["ngf"]
    assert [e["name"] for e in handoff.registry] == ["center_a", "center_b"]
    for maps in handoff.label_bank.values():  # label maps only, volumetric
        assert maps.dtype == torch.uint8 and tuple(maps.shape[1:]) == (1, SIZE, SIZE, SIZE)
    second = handoff.visits[-1]
    assert second["reminded_codes"] == [0] and second["final_losses"]["reminding"] > 0

    generator = TDGANGenerator(**handoff.network)
    generator.load_state_dict(handoff.generator, strict=True)
    assert any(p.dim() == 5 for p in generator.parameters())  # Conv3d kernels
    label = handoff.label_bank["center_a"][:1].long()
    with torch.no_grad():
        out = generator.eval()(encode_condition(label, torch.tensor([0]), 4, handoff.network["max_centers"]))
    assert out.shape == (1, 1, SIZE, SIZE, SIZE) and out.abs().max() <= 1
