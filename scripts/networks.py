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

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Act, Conv, Norm
from monai.networks.nets import PatchDiscriminator
from torch import nn

__all__ = [
    "CONDITIONING_MODES",
    "CenterConditionalNorm",
    "TDGANGenerator",
    "TemporaryDiscriminators",
    "encode_condition",
    "one_hot_labels",
    "with_legacy_defaults",
]


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


CONDITIONING_MODES = ("cin", "spade", "input")
"""How the generator sees the center code: ``cin`` (default) a per-center scale and shift in every norm layer;
``spade`` a per-pixel scale and shift looked up from the label x center one-hot in every norm layer; ``input`` only
through the label x center one-hot input (the generator before conditional norms; kept so that its hand-offs and
weights can still be described and loaded)."""

# conditional scales start at N(1, 0.02) as pix2pix draws its norm weights; shifts at N(0, 0.02), not 0, so that
# codes differ from the start on one-class maps
_NORM_INIT_STD = 0.02

LEGACY_SETTINGS: dict[str, Any] = {"conditioning": "input"}
"""Settings added to :py:attr:`TDGANGenerator.settings` after hand-offs were first written, with the value that
describes a generator recorded without them."""


def with_legacy_defaults(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Recorded generator settings, with the settings added since filled in as the earlier generator had them.

    A hand-off (or message) written before ``conditioning`` existed records no such key: it holds the weights of an
    ``input``-conditioned generator, and must be built and compared as one.
    """
    return {**LEGACY_SETTINGS, **settings}


class CenterConditionalNorm(nn.Module):
    """Instance norm without affine, then a scale and shift chosen by a one-hot condition.

    Conditional instance norm (Dumoulin et al. 2017) when the condition is one code per sample, (B, N, 1, ...): each
    code has its own per-channel scale and shift. SPADE-style modulation (Park et al. 2019, with a 1x1 lookup in place
    of SPADE's small convolutional network) when ``per_pixel`` and the condition is a one-hot map at the layer's
    resolution, (B, N, *spatial): each pixel gets the scale and shift of its code. Either way the code reaches the
    layer's output even where the normalised input is zero (a uniform label map). The lookup is one bias-free 1x1
    convolution of the one-hot (output channels ``[:C]`` scale, ``[C:]`` shift). MONAI's norm layers have no
    conditional variant, hence this module.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        channels: feature channels C.
        num_codes: one-hot length N of the condition.
        per_pixel: the condition is a one-hot map (SPADE-style) rather than one code per sample.
    """

    def __init__(self, spatial_dims: int, channels: int, num_codes: int, per_pixel: bool = False) -> None:
        super().__init__()
        self.takes_code = True  # what the generator's layer loops look for (TorchScript resolves hasattr statically)
        self.channels = channels
        self.per_pixel = per_pixel
        self.norm = Norm[Norm.INSTANCE, spatial_dims](channels)
        self.modulation = Conv[Conv.CONV, spatial_dims](num_codes, 2 * channels, kernel_size=1, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Scales from N(1, 0.02), shifts from N(0, 0.02): near identity, yet different per code from the start."""
        with torch.no_grad():
            self.modulation.weight[: self.channels].normal_(1.0, _NORM_INIT_STD)
            self.modulation.weight[self.channels :].normal_(0.0, _NORM_INIT_STD)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (B, C, *spatial); modulate it by the one-hot ``code``, (B, N, 1, ...) or (B, N, *spatial)."""
        scale, shift = self.modulation(code).chunk(2, dim=1)
        if self.per_pixel:
            return torch.addcmul(shift, self.norm(x), scale)
        # per sample: norm and modulation fused in one batch norm over (1, B*C, ...), as torch computes instance norm
        # (about a third faster than normalising and modulating apart)
        b, c = x.shape[0], x.shape[1]
        flat = x.reshape([1, b * c] + list(x.shape[2:]))
        out = F.batch_norm(flat, None, None, scale.reshape(-1), shift.reshape(-1), True, 0.0, self.norm.eps)
        return out.reshape(x.shape)


def _norm(spatial_dims: int, channels: int, conditioning: str, num_classes: int, max_centers: int) -> nn.Module:
    """The norm layer of one generator stage for a conditioning mode."""
    if conditioning == "input":
        return Norm[Norm.INSTANCE, spatial_dims](channels)
    if conditioning == "cin":
        return CenterConditionalNorm(spatial_dims, channels, max_centers)
    return CenterConditionalNorm(spatial_dims, channels, max_centers * num_classes, per_pixel=True)


class _ResidualBlock(nn.Module):
    """pix2pix residual block: reflect-padded conv, norm, ReLU, conv, norm, plus the identity."""

    def __init__(self, spatial_dims: int, channels: int, norm: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.takes_code = True  # it passes the code on to its norm layers
        conv = Conv[Conv.CONV, spatial_dims]
        self.body = nn.ModuleList(
            [
                conv(channels, channels, kernel_size=3, padding=1, padding_mode="reflect"),
                norm(channels),
                Act[Act.RELU](inplace=True),
                conv(channels, channels, kernel_size=3, padding=1, padding_mode="reflect"),
                norm(channels),
            ]
        )

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in self.body:
            if hasattr(layer, "takes_code"):
                h = layer(h, code)
            else:
                h = layer(h)
        return x + h


class TDGANGenerator(nn.Module):
    """pix2pix "ResNet-n-blocks" generator, conditioned on a label map and an explicit center code.

    c7s1-ngf, ``num_downsampling`` stride-2 convolutions (channels doubling), ``num_blocks`` residual blocks, as many
    transposed convolutions back, c7s1-out and Tanh; instance norm, reflection padding, no dropout, convolution
    weights drawn from N(0, 0.02). The same class builds 2D and 3D generators.

    The input is the label x center one-hot tensor made by :py:func:`encode_condition` (or :py:meth:`condition`):
    ``max_centers * num_classes`` channels. Spatial sizes must be divisible by ``2 ** num_downsampling``. With
    ``conditioning="cin"`` every norm layer also gets the center code, read back from the input (the K channels of
    the sample's center group sum to 1 at every pixel, the other groups are 0), so the code survives on label maps
    of one class, where the input alone reaches the first norm as a constant and is erased (docs/generator.md).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        num_classes: number of label classes K in the conditioning label map.
        max_centers: number of center codes the generator can hold; fixed for a whole sequence.
        out_channels: image channels produced (1 for MRI, 3 for H&E).
        ngf: channels of the first layer.
        num_blocks: residual blocks at the bottleneck (9 in pix2pix).
        num_downsampling: stride-2 stages (2 in pix2pix).
        conditioning: one of :py:data:`CONDITIONING_MODES`: ``cin`` (per-center scale and shift after every
            instance norm), ``spade`` (per-pixel scale and shift from the label x center one-hot) or ``input`` (the
            one-hot input only, instance norm without affine: the generator of earlier hand-offs).

    Raises:
        ValueError: unsupported ``spatial_dims``, too few classes or centers, or an unknown ``conditioning``.
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
        conditioning: str = "cin",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if num_classes < 2 or max_centers < 1:
            raise ValueError(f"need num_classes >= 2 and max_centers >= 1, got {num_classes} and {max_centers}.")
        if conditioning not in CONDITIONING_MODES:
            raise ValueError(f"conditioning must be one of {CONDITIONING_MODES}, got {conditioning!r}.")
        self.settings = {
            "spatial_dims": spatial_dims,
            "num_classes": num_classes,
            "max_centers": max_centers,
            "out_channels": out_channels,
            "ngf": ngf,
            "num_blocks": num_blocks,
            "num_downsampling": num_downsampling,
            "conditioning": conditioning,
        }
        self.num_classes = num_classes
        self.max_centers = max_centers
        self.conditioning = conditioning
        conv, convt, relu = Conv[Conv.CONV, spatial_dims], Conv[Conv.CONVTRANS, spatial_dims], Act[Act.RELU]

        def norm(channels: int) -> nn.Module:
            return _norm(spatial_dims, channels, conditioning, num_classes, max_centers)

        # a flat list in the order of the old nn.Sequential, so that "input" keeps its parameter names
        layers: list[nn.Module] = [
            conv(num_classes * max_centers, ngf, kernel_size=7, padding=3, padding_mode="reflect"),
            norm(ngf),
            relu(inplace=True),
        ]
        ch = ngf
        for _ in range(num_downsampling):
            layers += [conv(ch, ch * 2, kernel_size=3, stride=2, padding=1), norm(ch * 2), relu(inplace=True)]
            ch *= 2
        layers += [_ResidualBlock(spatial_dims, ch, norm) for _ in range(num_blocks)]
        for _ in range(num_downsampling):
            layers += [
                convt(ch, ch // 2, kernel_size=3, stride=2, padding=1, output_padding=1),
                norm(ch // 2),
                relu(inplace=True),
            ]
            ch //= 2
        layers += [conv(ch, out_channels, kernel_size=7, padding=3, padding_mode="reflect"), Act[Act.TANH]()]
        self.model = nn.ModuleList(layers)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, CenterConditionalNorm):
                m.reset_parameters()  # the loop above re-drew its modulation weights

    def condition(self, label: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        """The generator input for label maps (B, 1, *spatial) under center codes (B,)."""
        return encode_condition(label, center, self.num_classes, self.max_centers)

    def center_code(self, x: torch.Tensor) -> torch.Tensor:
        """The per-sample center one-hot (B, max_centers) of an input made by :py:func:`encode_condition`.

        Exact: each group's channels sum to 1 at every pixel for the sample's center and to 0 elsewhere.
        """
        return x.reshape(x.shape[0], self.max_centers, self.num_classes, -1).sum(2).mean(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a label x center one-hot tensor (B, max_centers * K, *spatial) to an image in [-1, 1]."""
        if self.conditioning == "spade":
            code = x
        else:
            code = self.center_code(x).reshape([x.shape[0], self.max_centers] + [1] * (x.dim() - 2))
        h = x
        for layer in self.model:
            if hasattr(layer, "takes_code"):
                if self.conditioning == "spade" and code.shape[2:] != h.shape[2:]:
                    code = F.interpolate(x, size=h.shape[2:], mode="nearest")  # once per resolution
                h = layer(h, code)
            else:
                h = layer(h)
        return h


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
