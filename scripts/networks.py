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
"""The TDGAN networks: a center-conditioned ResNet generator and one temporary PatchGAN discriminator per center."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Act, Conv, Norm
from monai.networks.nets import PatchDiscriminator
from torch import nn

__all__ = ["TDGANGenerator", "TemporaryDiscriminators", "encode_condition", "one_hot_labels"]


def one_hot_labels(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot encode an integer label map.

    Args:
        label: integer class map of shape (B, 1, *spatial).
        num_classes: number of classes K.

    Returns:
        float tensor of shape (B, K, *spatial).
    """
    out = torch.zeros((label.shape[0], num_classes, *label.shape[2:]), device=label.device)
    return out.scatter_(1, label.long(), 1.0)


def encode_condition(label: torch.Tensor, center: torch.Tensor, num_classes: int, max_centers: int) -> torch.Tensor:
    """Build the generator's label x center one-hot input.

    Channel ``c * K + k`` is ``[label == k]`` for samples of center code ``c`` and zero otherwise, so every center
    has its own first-layer kernels. Unlike constant code planes, this survives the instance norm that follows the
    first convolution (a spatially constant plane is removed by the norm, a label-shaped one is not).

    Args:
        label: integer class map of shape (B, 1, *spatial) with values in [0, num_classes).
        center: center codes of shape (B,) with values in [0, max_centers).
        num_classes: number of label classes K.
        max_centers: number of center codes the generator was built for.

    Returns:
        float tensor of shape (B, max_centers * K, *spatial).
    """
    center = center.to(device=label.device, dtype=torch.long).view(-1, *([1] * (label.ndim - 1)))
    index = center * num_classes + label.long()
    out = torch.zeros((label.shape[0], max_centers * num_classes, *label.shape[2:]), device=label.device)
    return out.scatter_(1, index, 1.0)


class _ResidualBlock(nn.Module):
    """pix2pix residual block: reflect-padded conv, norm, ReLU, conv, norm, plus the identity."""

    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__()
        conv, norm = Conv[Conv.CONV, spatial_dims], Norm[Norm.INSTANCE, spatial_dims]
        self.body = nn.Sequential(
            conv(channels, channels, kernel_size=3, padding=1, padding_mode="reflect"),
            norm(channels),
            Act[Act.RELU](inplace=True),
            conv(channels, channels, kernel_size=3, padding=1, padding_mode="reflect"),
            norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TDGANGenerator(nn.Module):
    """pix2pix "ResNet-n-blocks" generator, conditioned on a label map and an explicit center code.

    c7s1-ngf, ``num_downsampling`` stride-2 convolutions (channels doubling), ``num_blocks`` residual blocks, as many
    transposed convolutions back, c7s1-out and Tanh; instance norm without affine, reflection padding, no dropout,
    weights drawn from N(0, 0.02). The same class builds 2D and 3D generators.

    The input is the label x center one-hot tensor made by :py:func:`encode_condition` (or :py:meth:`condition`):
    ``max_centers * num_classes`` channels. Spatial sizes must be divisible by ``2 ** num_downsampling``.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        num_classes: number of label classes K in the conditioning label map.
        max_centers: number of center codes the generator can hold; fixed for a whole sequence.
        out_channels: image channels produced (1 for MRI, 3 for H&E).
        ngf: channels of the first layer.
        num_blocks: residual blocks at the bottleneck (9 in pix2pix).
        num_downsampling: stride-2 stages (2 in pix2pix).
    """

    def __init__(
        self,
        spatial_dims: int,
        num_classes: int,
        max_centers: int,
        out_channels: int = 1,
        ngf: int = 64,
        num_blocks: int = 9,
        num_downsampling: int = 2,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if num_classes < 2 or max_centers < 1:
            raise ValueError(f"need num_classes >= 2 and max_centers >= 1, got {num_classes} and {max_centers}.")
        self.settings = {
            "spatial_dims": spatial_dims,
            "num_classes": num_classes,
            "max_centers": max_centers,
            "out_channels": out_channels,
            "ngf": ngf,
            "num_blocks": num_blocks,
            "num_downsampling": num_downsampling,
        }
        self.num_classes = num_classes
        self.max_centers = max_centers
        conv, convt = Conv[Conv.CONV, spatial_dims], Conv[Conv.CONVTRANS, spatial_dims]
        norm, relu = Norm[Norm.INSTANCE, spatial_dims], Act[Act.RELU]

        layers: list[nn.Module] = [
            conv(num_classes * max_centers, ngf, kernel_size=7, padding=3, padding_mode="reflect"),
            norm(ngf),
            relu(inplace=True),
        ]
        ch = ngf
        for _ in range(num_downsampling):
            layers += [conv(ch, ch * 2, kernel_size=3, stride=2, padding=1), norm(ch * 2), relu(inplace=True)]
            ch *= 2
        layers += [_ResidualBlock(spatial_dims, ch) for _ in range(num_blocks)]
        for _ in range(num_downsampling):
            layers += [
                convt(ch, ch // 2, kernel_size=3, stride=2, padding=1, output_padding=1),
                norm(ch // 2),
                relu(inplace=True),
            ]
            ch //= 2
        layers += [conv(ch, out_channels, kernel_size=7, padding=3, padding_mode="reflect"), Act[Act.TANH]()]
        self.model = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def condition(self, label: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        """The generator input for label maps (B, 1, *spatial) under center codes (B,)."""
        return encode_condition(label, center, self.num_classes, self.max_centers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a label x center one-hot tensor (B, max_centers * K, *spatial) to an image in [-1, 1]."""
        return self.model(x)


class TemporaryDiscriminators(nn.ModuleList):
    """The temporary discriminators of one visit: one MONAI PatchGAN per online group of centers.

    Each sees ``[condition, image]`` and returns patch logits; the condition is the one-hot label map, or, when built
    with ``max_centers``, the label x center one-hot of :py:func:`encode_condition` (the generator's own input), so
    that a discriminator shared by several centers (joint training) knows which center each pair comes from and can
    refuse one center's anatomy drawn in another's appearance. They are created fresh at every visit and never leave
    the center.

    Args:
        count: number of discriminators (centers online at once with their own discriminator).
        spatial_dims: number of spatial dimensions, 2 or 3.
        num_classes: label classes K (one-hot channels of the condition).
        image_channels: channels of the image.
        ndf: channels of the first layer (64 in pix2pix).
        num_layers: strided layers (3 gives pix2pix's 70x70 PatchGAN).
        max_centers: None (default): the condition is the one-hot label (K channels); a number: the label x center
            one-hot (``max_centers * K`` channels), the generator's ``max_centers``.
    """

    def __init__(
        self,
        count: int,
        spatial_dims: int,
        num_classes: int,
        image_channels: int = 1,
        ndf: int = 64,
        num_layers: int = 3,
        max_centers: int | None = None,
    ) -> None:
        if count < 1:
            raise ValueError(f"need at least one discriminator, got count={count}.")
        if max_centers is not None and max_centers < 1:
            raise ValueError(f"max_centers must be None or >= 1, got {max_centers}.")
        super().__init__(
            PatchDiscriminator(
                spatial_dims=spatial_dims,
                channels=ndf,
                in_channels=num_classes * (max_centers or 1) + image_channels,
                out_channels=1,
                num_layers_d=num_layers,
                norm="INSTANCE",
            )
            for _ in range(count)
        )
        self.num_classes, self.max_centers = num_classes, max_centers

    def condition(self, label: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        """The condition the discriminators see for label maps (B, 1, *spatial) of centers (B,): the one-hot label
        (B, K, *spatial), or with ``max_centers`` the label x center one-hot (B, max_centers * K, *spatial)."""
        if self.max_centers is None:
            return one_hot_labels(label, self.num_classes)
        return encode_condition(label, center, self.num_classes, self.max_centers)

    def logits(self, index: int, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Patch logits of discriminator ``index`` for the pair (condition, image)."""
        return self[index](torch.cat([condition, image], dim=1))[-1]

    def forward(self, condition: Sequence[torch.Tensor], image: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Patch logits of every discriminator for its group's pairs, in one call.

        One call per backward pass is what ``DistributedDataParallel`` needs (it syncs gradients through ``forward``
        only), so a step puts all its pairs (e.g. fakes and reals concatenated along the batch) through one call.

        Args:
            condition: one condition batch per discriminator (see :py:meth:`condition`).
            image: one (B_i, C, *spatial) image batch per discriminator.

        Returns:
            one logits tensor per discriminator.
        """
        if len(condition) != len(self) or len(image) != len(self):
            raise ValueError(
                f"expected {len(self)} condition and image batches, got {len(condition)} and {len(image)}."
            )
        return [self.logits(i, y, x) for i, (y, x) in enumerate(zip(condition, image))]
