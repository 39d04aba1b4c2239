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
"""Tests only: a torch.hub cache laid out like MONAI's perceptual-models one, holding RANDOM (not pretrained) weights.

No pretrained weights can be downloaded here, so the tests of the perceptual loading path build their own cache:
this file is copied in as the hub code (``hubconf.py`` of ``Project-MONAI_perceptual-models_main``) and the weights
files are randomly initialised networks of the same architectures (RadImageNet's 2D ResNet50 without top, MedicalNet's
3D ResNet10 with dilated last stages), saved under the file names and in the places that the real hub code reads. A loss
built from it measures nothing perceptual; it only shows that the bundle finds, loads and runs such a cache.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

dependencies = ["torch"]  # what torch.hub checks before calling an entry point

HUB_REPO_FOLDER = "Project-MONAI_perceptual-models_main"
RADIMAGENET_FILE = "RadImageNet-ResNet50_notop.pth"
MEDICALNET10_FILE = "medicalnet_resnet_10_23dataset.pth"
CHECKPOINTS_FOLDER = "monai_checkpoints"
HF_FOLDER = "models--MONAI--checkpoints"
FAKE_REVISION = "0" * 40  # a Hugging Face cache's snapshot folder is named by a commit hash
MARKER = "RANDOM_WEIGHTS_NOT_PRETRAINED.txt"


class _Bottleneck2d(nn.Module):
    """RadImageNet's (Keras-style) bottleneck: stride in the first 1x1 conv, biased convs, batch norm eps 1.001e-5."""

    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride)
        self.bn1 = nn.BatchNorm2d(planes, eps=1.001e-5)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(planes, eps=1.001e-5)
        self.conv3 = nn.Conv2d(planes, out, 1)
        self.bn3 = nn.BatchNorm2d(out, eps=1.001e-5)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride=stride), nn.BatchNorm2d(out, eps=1.001e-5)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return self.relu(h + (x if self.downsample is None else self.downsample(x)))


class RadImageNetResNet50(nn.Module):
    """ResNet50 without its classifier, as RadImageNet's: 3-channel input, layer4 features (B, 2048, H/32, W/32)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64, eps=1.001e-5)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], start=1):
            layer = [_Bottleneck2d(inplanes, planes, stride)]
            layer += [_Bottleneck2d(planes * 4, planes, 1) for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*layer))
            inplanes = planes * 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class _BasicBlock3d(nn.Module):
    """MedicalNet's basic block: two bias-free 3x3x3 convs (dilated in the last stages), shortcut 1x1x1 conv + BN."""

    def __init__(self, inplanes: int, planes: int, stride: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv3d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm3d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(h + (x if self.downsample is None else self.downsample(x)))


class MedicalNetResNet10(nn.Module):
    """MedicalNet's 3D ResNet10 encoder: 1-channel input, layer4 features (B, 512, D/8, H/8, W/8)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(1, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(_BasicBlock3d(64, 64, 1, 1))
        self.layer2 = nn.Sequential(_BasicBlock3d(64, 128, 2, 1))
        self.layer3 = nn.Sequential(_BasicBlock3d(128, 256, 1, 2))
        self.layer4 = nn.Sequential(_BasicBlock3d(256, 512, 1, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _weights(cache_dir: str | None, filename: str, places: tuple[str, ...]) -> Path:
    """The first place that holds ``filename``, looked up as the real hub code's versions do (no download here)."""
    root = Path(cache_dir or torch.hub.get_dir())
    for place in places:
        if place == HF_FOLDER:  # huggingface_hub's layout: refs/main names the snapshot
            revision = (root / HF_FOLDER / "refs" / "main").read_text().strip()
            path = root / HF_FOLDER / "snapshots" / revision / filename
        else:
            path = root / place / filename
        if path.is_file():
            return path
    raise FileNotFoundError(f"stand-in hub code: {filename} is in none of {places} under {root}.")


def radimagenet_resnet50(cache_dir: str | None = None, file_name: str = RADIMAGENET_FILE) -> nn.Module:
    """Hub entry point, called as MONAI calls the real one: the network with the cache's weights file."""
    model = RadImageNetResNet50()
    path = _weights(cache_dir, file_name, ("", CHECKPOINTS_FOLDER))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


def medicalnet_resnet10_23datasets(cache_dir: str | None = None, filename: str = MEDICALNET10_FILE) -> nn.Module:
    """Hub entry point: weights stored as MedicalNet's checkpoints are (``{"state_dict": {"module.<name>": ...}}``)."""
    path = _weights(cache_dir, filename, (CHECKPOINTS_FOLDER, HF_FOLDER))
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    model = MedicalNetResNet10()
    model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    return model


LAYOUTS = {
    "radimagenet_resnet50": ("monai_checkpoints", "hub_root"),
    "medicalnet_resnet10_23datasets": ("monai_checkpoints", "huggingface"),
}
"""Where the weights may lie, per network: ``monai_checkpoints/`` (the current hub code), the hub folder itself
(RadImageNet, looked at first), or huggingface_hub's cache layout (earlier MedicalNet hub code)."""


def write_random_weights_hub(
    hub_dir: Path, network_type: str, layout: str = "monai_checkpoints", seed: int = 0
) -> dict[str, torch.Tensor]:
    """Lay out a torch.hub cache in ``hub_dir`` with this file as the hub code and RANDOM weights for one network.

    Args:
        hub_dir: the torch.hub directory to fill.
        network_type: ``radimagenet_resnet50`` or ``medicalnet_resnet10_23datasets``.
        layout: one of ``LAYOUTS[network_type]``.
        seed: seed of the random weights.

    Returns:
        the random state dict written (to compare with what the bundle loads).
    """
    if layout not in LAYOUTS.get(network_type, ()):
        raise ValueError(f"no random-weights stand-in for {network_type!r} in layout {layout!r}.")
    repo = hub_dir / HUB_REPO_FOLDER
    repo.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(__file__, repo / "hubconf.py")
    (hub_dir / MARKER).write_text("The weights in this torch.hub cache are RANDOM, made by a test; not pretrained.\n")
    torch.manual_seed(seed)
    radimagenet = network_type == "radimagenet_resnet50"
    state = (RadImageNetResNet50() if radimagenet else MedicalNetResNet10()).state_dict()
    filename = RADIMAGENET_FILE if radimagenet else MEDICALNET10_FILE
    folder = {"monai_checkpoints": hub_dir / CHECKPOINTS_FOLDER, "hub_root": hub_dir}.get(layout)
    if layout == "huggingface":
        (hub_dir / HF_FOLDER / "refs").mkdir(parents=True, exist_ok=True)
        (hub_dir / HF_FOLDER / "refs" / "main").write_text(FAKE_REVISION)
        folder = hub_dir / HF_FOLDER / "snapshots" / FAKE_REVISION
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(
        state if radimagenet else {"state_dict": {f"module.{k}": v for k, v in state.items()}}, folder / filename
    )
    return state
