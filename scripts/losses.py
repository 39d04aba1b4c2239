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
"""TDGAN's perceptual (feature) loss; the adversarial loss is MONAI's ``PatchAdversarialLoss`` (see the trainer)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PerceptualLoss", "VGG16Features"]

logger = logging.getLogger(__name__)


class PerceptualLoss(nn.Module):
    """Mean over layers of the MSE between feature maps of a frozen feature network.

    Args:
        feature_network: module mapping an image batch to a list of feature maps. It is put in eval mode and frozen.
    """

    def __init__(self, feature_network: nn.Module) -> None:
        super().__init__()
        self.features = feature_network.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        """The feature network stays in eval mode whatever the trainer asks."""
        return self

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_feats = self.features(target)
        pred_feats = self.features(prediction)
        return torch.stack([F.mse_loss(p, t) for p, t in zip(pred_feats, target_feats)]).mean()


# torchvision's VGG16 `features` layout up to relu4_3: conv widths, "M" = max pool.
_VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512)
# indices in that `features` sequence of relu1_2, relu2_2, relu3_3, relu4_3
_VGG16_TAPS = (3, 8, 15, 22)


class VGG16Features(nn.Module):
    """VGG16 feature taps (relu1_2, relu2_2, relu3_3, relu4_3) for a perceptual loss, from LOCAL weights.

    No weights are downloaded: ``weights_path`` is a torchvision-format VGG16 state dict on disk (keys
    ``features.<i>.weight`` / ``.bias``; classifier keys are ignored). Images in [-1, 1] are mapped to ImageNet
    normalisation; single-channel images are repeated to three channels. 2D only.

    Args:
        weights_path: path of the state dict. Required unless ``random_weights_for_timing`` is True.
        random_weights_for_timing: build the network with random weights. Such a network measures nothing
            perceptual; it exists only so that step-time benchmarks can include a VGG16-sized feature network.

    Raises:
        ValueError: when no path is given (and random weights were not asked for), or the file lacks VGG16 keys.
        FileNotFoundError: when ``weights_path`` does not exist.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None, random_weights_for_timing: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for item in _VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_ch, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                in_ch = int(item)
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.random_weights = weights_path is None
        if weights_path is None:
            if not random_weights_for_timing:
                raise ValueError(
                    "VGG16Features needs weights_path: a local torchvision VGG16 state dict (no weights can be "
                    "downloaded). Set perceptual_network to null to train without the perceptual term."
                )
            logger.warning("VGG16Features has RANDOM weights: for timing only, it is not a perceptual loss.")
            return
        if not os.path.isfile(weights_path):
            raise FileNotFoundError(f"VGG16 weights file not found: {weights_path}")
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        wanted = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        own = self.features.state_dict()
        missing = sorted(set(own) - set(wanted))
        if missing:
            raise ValueError(f"{weights_path} is not a torchvision VGG16 state dict: missing features.{missing[0]}")
        self.features.load_state_dict({k: wanted[k] for k in own})

    def forward(self, image: torch.Tensor) -> Sequence[torch.Tensor]:
        if image.shape[1] == 1:
            image = image.expand(-1, 3, *image.shape[2:])
        x = ((image + 1.0) / 2.0 - self.mean) / self.std
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _VGG16_TAPS:
                taps.append(x)
        return taps
