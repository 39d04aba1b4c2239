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
"""Tests of the generator, its center conditioning, and the temporary discriminators."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigParser

from scripts.networks import TDGANGenerator, TemporaryDiscriminators, encode_condition, one_hot_labels
from tests.conftest import TRAIN


def test_fresh_generator_gives_different_images_for_different_center_codes():
    torch.manual_seed(0)
    gen = TDGANGenerator(spatial_dims=2, num_classes=4, max_centers=3, ngf=16, num_blocks=2).eval()
    label = torch.randint(0, 4, (1, 1, 32, 32)).expand(3, -1, -1, -1)
    with torch.no_grad():
        out = gen(gen.condition(label, torch.tensor([0, 1, 2])))
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        assert (out[a] - out[b]).abs().max() > 1e-2, f"codes {a} and {b} gave the same image"


def test_constant_code_planes_are_erased_by_instance_norm_but_label_x_center_input_is_not():
    """Why the conditioning is label x center: a code given as constant input planes does not reach the output."""
    torch.manual_seed(0)
    label = torch.randint(0, 4, (1, 1, 32, 32))
    one_hot = one_hot_labels(label, 4)
    planes = TDGANGenerator(spatial_dims=2, num_classes=6, max_centers=1, ngf=16, num_blocks=2).eval()
    code_a = torch.cat([one_hot, torch.tensor([1.0, 0.0]).view(1, 2, 1, 1).expand(1, 2, 32, 32)], 1)
    code_b = torch.cat([one_hot, torch.tensor([0.0, 1.0]).view(1, 2, 1, 1).expand(1, 2, 32, 32)], 1)
    ours = TDGANGenerator(spatial_dims=2, num_classes=4, max_centers=2, ngf=16, num_blocks=2).eval()
    with torch.no_grad():
        erased = (planes(code_a) - planes(code_b)).abs().max()
        kept = (ours(ours.condition(label, torch.tensor([0]))) - ours(ours.condition(label, torch.tensor([1])))).abs()
    assert erased < 1e-4  # the first instance norm removes a spatially constant offset
    assert kept.max() > 1e-2


def test_condition_puts_label_class_k_of_center_c_in_channel_c_times_k():
    label = torch.tensor([[[[0, 1], [2, 3]]]]).expand(2, -1, -1, -1)
    cond = encode_condition(label, torch.tensor([0, 2]), num_classes=4, max_centers=3)
    assert cond.shape == (2, 12, 2, 2)
    assert torch.equal(cond.sum(1), torch.ones(2, 2, 2))
    assert cond[1, 2 * 4 + 3, 1, 1] == 1 and cond[1, 3, 1, 1] == 0
    assert cond[0, 1, 0, 1] == 1 and cond[0, 4:].sum() == 0


@pytest.mark.parametrize("spatial_dims, size", [(2, (32, 32)), (3, (16, 16, 16))])
def test_generator_is_dimension_generic_and_outputs_tanh_range(spatial_dims, size):
    gen = TDGANGenerator(spatial_dims=spatial_dims, num_classes=3, max_centers=2, out_channels=2, ngf=4, num_blocks=1)
    label = torch.randint(0, 3, (2, 1, *size))
    out = gen(gen.condition(label, torch.tensor([0, 1])))
    assert out.shape == (2, 2, *size)
    assert out.abs().max() <= 1.0


def test_default_generator_is_pix2pix_resnet9_sized():
    gen = TDGANGenerator(spatial_dims=2, num_classes=1 + 1, max_centers=1, out_channels=3)
    params = sum(p.numel() for p in gen.parameters())
    assert 11.3e6 < params < 11.5e6  # pix2pix ResNet-9 at ngf=64: about 11.4 M


def test_each_temporary_discriminator_sees_label_and_image_and_returns_patch_logits():
    disc = TemporaryDiscriminators(count=2, spatial_dims=2, num_classes=4, image_channels=1, ndf=8)
    assert len(disc) == 2 and disc[0] is not disc[1]
    label = torch.randint(0, 4, (2, 1, 64, 64))
    logits = disc.logits(1, one_hot_labels(label, 4), torch.zeros(2, 1, 64, 64))
    assert logits.shape == (2, 1, 6, 6)  # 70x70 PatchGAN patches on a 64x64 input
    with pytest.raises(ValueError, match="at least one"):
        TemporaryDiscriminators(count=0, spatial_dims=2, num_classes=4)


@pytest.mark.parametrize("d_layers, field", [(3, 70), (2, 34)])
def test_train_config_d_layers_sets_the_patch_size_of_the_temporary_discriminators(d_layers: int, field: int):
    parser = ConfigParser()
    parser.read_config(TRAIN)
    parser.update({"d_layers": d_layers, "ndf": 8})
    parser["discriminators_def"]["count"] = 1
    disc = parser.get_parsed_content("discriminators_def")
    rf, jump = 1, 1
    for conv in (m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)):
        rf, jump = rf + (conv.kernel_size[0] - 1) * jump, jump * conv.stride[0]
    assert rf == field  # receptive field of one output logit, from the kernels and strides
