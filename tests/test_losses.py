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
import time
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.losses import PatchAdversarialLoss

from scripts.losses import ClassWeightedL1, MonaiPerceptualNetwork, PerceptualLoss, VGG16Features
from scripts.trainer import GAN_MODES
from tests.conftest import TRAIN
from tests.random_weights_perceptual_hub import HUB_REPO_FOLDER, MARKER, write_random_weights_hub


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


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch.hub directory ($TORCH_HOME/hub in a tmp TORCH_HOME); any network access by torch.hub fails."""

    def no_network(*args, **kwargs):
        raise AssertionError("torch.hub tried the network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # MONAI's cache_dir sets it process-wide; restored after
    monkeypatch.setattr(torch.hub, "urlopen", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    hub = tmp_path / "torch" / "hub"
    assert torch.hub.get_dir() == str(hub)
    return hub


@pytest.mark.parametrize(
    "spatial_dims, channels, network_type, layout, shape",
    [
        (2, 1, "radimagenet_resnet50", "monai_checkpoints", (2, 1, 32, 32)),  # MRI
        (2, 3, "radimagenet_resnet50", "hub_root", (2, 3, 32, 32)),  # H&E
        (3, 1, "medicalnet_resnet10_23datasets", "monai_checkpoints", (2, 1, 16, 16, 16)),
        (3, 1, "medicalnet_resnet10_23datasets", "huggingface", (2, 1, 16, 16, 16)),
    ],
)
def test_monai_perceptual_network_loads_a_random_weights_hub_cache_and_gives_a_trainable_scalar(
    offline_hub: Path, spatial_dims: int, channels: int, network_type: str, layout: str, shape: tuple[int, ...]
):
    """The hub cache here is made by the test from RANDOM weights (tests/random_weights_perceptual_hub.py): it checks
    the loading path and the loss's plumbing, not perceptual quality."""
    random_state = write_random_weights_hub(offline_hub, network_type, layout)
    assert (offline_hub / MARKER).is_file()
    network = MonaiPerceptualNetwork(spatial_dims, image_channels=channels)  # network_type: the default per dims
    assert network.network_type == network_type
    loaded = network.loss.perceptual_function.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in random_state.items())  # the cache's weights, not fresh ones

    loss = PerceptualLoss(network)
    loss.train()
    assert all(not p.requires_grad for p in loss.parameters())
    assert not any(m.training for m in network.modules())  # batch norms keep their statistics
    torch.manual_seed(0)
    target = torch.rand(shape) * 2 - 1
    prediction = (torch.rand(shape) * 2 - 1).requires_grad_()
    value = loss(prediction, target)
    assert value.shape == () and value.dtype == torch.float32 and value.item() > 0
    value.backward()
    assert torch.isfinite(prediction.grad).all() and prediction.grad.abs().sum() > 0
    assert loss(target, target).item() < 1e-6
    # inputs in [-1, 1] reach MONAI's loss in [0, 1], the range its RadImageNet path expects
    expected = network.loss((prediction.detach() + 1) / 2, (target + 1) / 2)
    torch.testing.assert_close(loss(prediction.detach(), target), expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # computed in float32 whatever the trainer's precision
        torch.testing.assert_close(loss(prediction.detach(), target), expected)


def test_monai_perceptual_network_reads_an_explicit_cache_dir(offline_hub: Path, tmp_path: Path):
    """RANDOM weights, as above, in a folder named by ``cache_dir`` instead of $TORCH_HOME/hub."""
    elsewhere = tmp_path / "hub_copy"
    write_random_weights_hub(elsewhere, "radimagenet_resnet50")
    with pytest.warns(UserWarning, match="cache_dir"):  # MONAI makes it the process's torch.hub directory
        network = MonaiPerceptualNetwork(2, cache_dir=elsewhere)
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    assert network(x, -x).item() > 0


@pytest.mark.parametrize(
    "spatial_dims, expected", [(2, "RadImageNet-ResNet50_notop.pth"), (3, "medicalnet_resnet_10_23dataset.pth")]
)
def test_missing_perceptual_weights_are_one_clear_line_without_a_network_probe(
    offline_hub: Path, spatial_dims: int, expected: str
):
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as err:
        MonaiPerceptualNetwork(spatial_dims)
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert "\n" not in message
    assert str(offline_hub) in message and f"{HUB_REPO_FOLDER}/hubconf.py" in message and expected in message
    assert "perceptual_network to null" in message and "TORCH_HOME" in message and "cache_dir" in message

    write_random_weights_hub(
        offline_hub, "radimagenet_resnet50" if spatial_dims == 3 else "medicalnet_resnet10_23datasets"
    )
    with pytest.raises(FileNotFoundError, match=expected) as err:  # the hub code alone is not enough
        MonaiPerceptualNetwork(spatial_dims)
    assert f"{HUB_REPO_FOLDER}/hubconf.py" not in str(err.value)


def test_hub_code_that_needs_a_missing_package_is_one_clear_line(offline_hub: Path):
    write_random_weights_hub(offline_hub, "radimagenet_resnet50")
    hubconf = offline_hub / HUB_REPO_FOLDER / "hubconf.py"
    hubconf.write_text(hubconf.read_text() + "\nimport tdgan_test_package_that_is_not_installed  # noqa\n")
    with pytest.raises(ImportError, match="needs the Python package 'tdgan_test_package_that_is_not_installed'.*pip"):
        MonaiPerceptualNetwork(2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spatial_dims": 2, "network_type": "medicalnet_resnet10_23datasets"}, "3D network"),
        ({"spatial_dims": 3, "network_type": "radimagenet_resnet50"}, "is_fake_3d"),
        ({"spatial_dims": 2, "image_channels": 4}, "1- or 3-channel"),
        ({"spatial_dims": 2, "network_type": "vgg"}, "network_type must be one of"),
    ],
)
def test_monai_perceptual_network_refuses_settings_it_cannot_serve(offline_hub: Path, kwargs: dict, match: str):
    with pytest.raises(ValueError, match=match):
        MonaiPerceptualNetwork(**kwargs)


def test_train_config_builds_the_perceptual_term_from_a_monai_perceptual_network(offline_hub: Path):
    """The config snippet of docs/generator.md, through configs/train.json's own ``perceptual_loss`` line; RANDOM
    weights (a test-made hub cache)."""
    write_random_weights_hub(offline_hub, "radimagenet_resnet50")
    parser = ConfigParser()
    parser.read_config(TRAIN)
    parser["perceptual_network"] = {
        "_target_": "scripts.losses.MonaiPerceptualNetwork",
        "spatial_dims": "@spatial_dims",
        "image_channels": "@image_channels",
    }
    parser["device"] = "$torch.device('cpu')"
    loss = parser.get_parsed_content("perceptual_loss")
    assert isinstance(loss, PerceptualLoss) and loss.pairwise
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert loss(x, x.flip(-1)).item() > 0


def test_class_weighted_l1_is_the_plain_l1_without_weights_and_weighs_each_image_by_its_own_classes():
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.rand(3, 2, 6, 6, generator=gen), torch.rand(3, 2, 6, 6, generator=gen)
    label = torch.randint(0, 4, (3, 1, 6, 6), generator=gen)
    plain = torch.nn.functional.l1_loss(pred, target)
    assert ClassWeightedL1(None, 4)(pred, target, label) == plain
    assert torch.allclose(ClassWeightedL1({0: 1.0}, 4)(pred, target, label), plain)
    weighted = ClassWeightedL1({"3": 5.0}, 4)
    # by hand: per image sum(w |d|) / sum(w) over its channels and pixels, w = 5 on class 3 else 1; then the mean
    w = torch.where(label == 3, 5.0, 1.0).expand_as(pred)
    by_hand = torch.stack([(w[i] * (pred[i] - target[i]).abs()).sum() / w[i].sum() for i in range(3)]).mean()
    assert torch.allclose(weighted(pred, target, label), by_hand)
    assert not torch.allclose(weighted(pred, target, label), plain)
    # one image's term reads only its own row: the batch's value is the mean of the images' values
    alone = torch.stack([weighted(pred[i : i + 1], target[i : i + 1], label[i : i + 1]) for i in range(3)])
    assert torch.allclose(weighted(pred, target, label), alone.mean())
    # a larger error inside the weighted class costs more than the same error outside it
    inside, outside = target.clone(), target.clone()
    inside[label.expand_as(target) == 3] += 0.5
    outside[(label.expand_as(target) == 1)] += 0.5
    frac3, frac1 = (label == 3).float().mean(), (label == 1).float().mean()
    assert weighted(target, inside, label) / frac3 > weighted(target, outside, label) / frac1


@pytest.mark.parametrize(
    "weights, match",
    [
        ({4: 2.0}, "class 4 is not one of 0..3"),
        ({"lesion": 2.0}, "class 'lesion'"),
        ({True: 2.0}, "class True"),
        ({"\u00b3": 2.0}, "class"),
        ({3: 0.0}, "weight of class 3"),
        ({3: True}, "weight of class 3"),
        ({3: 5000}, "weight of class 3"),
        ([1, 1, 1, 5], "map"),
        ({}, "map"),
    ],
)
def test_class_weighted_l1_refuses_a_class_or_weight_it_cannot_use(weights, match):
    with pytest.raises(ValueError, match=match):
        ClassWeightedL1(weights, 4)
