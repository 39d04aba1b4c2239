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
"""Tests of the adversarial criteria and the pluggable perceptual loss (local weights only)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from monai.losses import PatchAdversarialLoss

from scripts.losses import PerceptualLoss, VGG16Features
from scripts.trainer import GAN_MODES


def test_adversarial_criteria_of_the_gan_modes_match_hand_computed_values():
    logits = torch.zeros(1, 1, 2, 2)
    bce = PatchAdversarialLoss(criterion=GAN_MODES["vanilla"], no_activation_leastsq=True)
    lsq = PatchAdversarialLoss(criterion=GAN_MODES["lsgan"], no_activation_leastsq=True)
    assert bce(logits, True, True).item() == pytest.approx(math.log(2))
    assert bce(logits + 2.0, False, True).item() == pytest.approx(math.log(1 + math.exp(2.0)))
    assert lsq(logits, True, True).item() == pytest.approx(1.0)
    assert lsq(logits, False, True).item() == pytest.approx(0.0)
    assert lsq(logits - 1.0, True, False).item() == pytest.approx(4.0)  # the generator's target is always real


def test_vgg16_features_need_a_local_weights_file():
    with pytest.raises(ValueError, match="needs weights_path"):
        VGG16Features()
    with pytest.raises(FileNotFoundError, match="not found"):
        VGG16Features("/nonexistent/vgg16.pth")


def test_vgg16_features_load_torchvision_layout_and_perceptual_loss_is_zero_only_for_equal_images(tmp_path: Path):
    reference = VGG16Features(random_weights_for_timing=True)
    state = {f"features.{k}": v for k, v in reference.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # ignored
    torch.save(state, tmp_path / "vgg16.pth")
    loaded = VGG16Features(tmp_path / "vgg16.pth")
    assert not loaded.random_weights
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), reference.state_dict().values()))

    loss = PerceptualLoss(loaded)
    assert all(not p.requires_grad for p in loss.parameters()) and not loss.features.training
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert loss(x, x).item() == 0.0
    assert loss(x, -x).item() > 0
    assert len(loaded(x)) == 4  # relu1_2, relu2_2, relu3_3, relu4_3

    del state["features.0.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="not a torchvision VGG16 state dict"):
        VGG16Features(tmp_path / "broken.pth")
