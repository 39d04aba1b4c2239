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
"""Whether a synthetic set matches the real distribution: FID and KID on features of a network trained on the task's
real images, and MS-SSIM diversity."""

from __future__ import annotations

import contextlib
import io
import itertools
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import FIDMetric, MultiScaleSSIMMetric
from monai.networks.layers import SkipConnection
from torch import nn

__all__ = [
    "MS_SSIM_WEIGHTS",
    "FEATURES",
    "unet_bottom",
    "encoder_features",
    "frechet_distance",
    "kernel_inception_distance",
    "ms_ssim_settings",
    "ms_ssim_diversity",
    "distribution_scores",
]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""Wang, Simoncelli and Bovik (2003)'s scale weights, finest scale first (MONAI's default)."""

FEATURES = (
    "the bottom block of the segmentation UNet trained on every center's real training images (real_all: "
    "UNet.model[1].submodule[1]...submodule, the deepest residual unit, 1/8 of the image size), global-average-pooled "
    "to one value per channel"
)
"""Which features FID and KID are computed on, as the report states it."""


def unet_bottom(network: nn.Module) -> nn.Module:
    """The bottom block of a ``monai.networks.nets.UNet`` (the deepest level, between the last down and the first up
    path), found by following its nested ``SkipConnection`` s.

    Raises:
        ValueError: ``network`` is not built like a MONAI UNet (``model`` = [down, SkipConnection, up]).
    """
    block = getattr(network, "model", None)
    depth = 0
    while isinstance(block, nn.Sequential) and len(block) == 3 and isinstance(block[1], SkipConnection):
        block, depth = block[1].submodule, depth + 1
    if depth == 0 or block is None:
        raise ValueError(
            f"unet_bottom: expected a monai.networks.nets.UNet (model = [down, SkipConnection, up]), got "
            f"{type(network).__name__}; give the segmentation network of configs/segmentation.json."
        )
    return block


@torch.no_grad()
def encoder_features(network: nn.Module, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Global-average-pooled output of the UNet's bottom block (:func:`unet_bottom`) for images (N, C, *spatial)
    scaled as the network was trained ([0, 1] in the evaluation); returns (N, channels) in float64."""
    network.eval()
    device = next(network.parameters()).device
    caught: list[torch.Tensor] = []
    hook = unet_bottom(network).register_forward_hook(lambda _m, _i, out: caught.append(out.flatten(2).mean(-1)))
    try:
        for i in range(0, images.shape[0], batch_size):
            network(images[i : i + batch_size].to(device))
    finally:
        hook.remove()
    return torch.cat(caught).double().cpu()


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets (N, D) and (M, D), with ``monai.metrics.FIDMetric``:
    ``|mu_r - mu_f|^2 + tr(S_r + S_f - 2 (S_r S_f)^(1/2))``.

    Biased at small sample sizes: with tens of images, the expected value for two samples of the SAME distribution is
    well above 0 and falls as the samples grow, so compare values only at equal sample sizes. Round-off below 0 (for
    identical sets) is returned as 0.
    """
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # scipy's sqrtm of rank-deficient S
        warnings.simplefilter("ignore")
        value = float(FIDMetric()(fake.double(), real.double()))
    return max(0.0, value)


def kernel_inception_distance(real: torch.Tensor, fake: torch.Tensor, degree: int = 3, coef0: float = 1.0) -> float:
    """Kernel inception distance (Bińkowski et al., 2018): the unbiased estimate of the squared MMD between two
    feature sets (N, D) and (M, D) under the polynomial kernel ``k(x, y) = (x . y / D + coef0) ** degree``.

    Unbiased at any sample size (so it can be slightly negative when the sets match). Written here because
    ``monai.metrics.MMDMetric`` uses a linear kernel (it compares only the means) and needs sets of equal size.

    Raises:
        ValueError: a set has fewer than two vectors, or the feature sizes differ.
    """
    if real.shape[0] < 2 or fake.shape[0] < 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"kernel_inception_distance needs two sets of at least 2 feature vectors of one size, got shapes "
            f"{tuple(real.shape)} and {tuple(fake.shape)}."
        )
    x, y = real.double(), fake.double()
    d, m, n = x.shape[1], x.shape[0], y.shape[0]

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a @ b.T / d + coef0) ** degree

    kxx, kyy = kernel(x, x), kernel(y, y)
    within = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(within - 2 * kernel(x, y).mean())


def ms_ssim_settings(spatial_size: Sequence[int], kernel_size: int = 11, kernel_sigma: float = 1.5) -> dict[str, Any]:
    """MS-SSIM settings that fit the image size: the quality matrix's SSIM window (11 pixels, sigma 1.5) and the most
    of the five standard scales (up to 5) at which the coarsest image still holds the window, with Wang et al.'s
    weights of those scales renormalised to sum to 1 (e.g. 64x64: 3 scales, 64, 32 and 16 pixels; 256x256: all 5).

    ``monai.metrics.MultiScaleSSIMMetric`` refuses sizes where ``size // (scales - 1) ** 2 <= kernel_size - 1``;
    this also asks that ``size / 2 ** (scales - 1) >= kernel_size`` (the window fits the coarsest scale).

    Raises:
        ValueError: the images are smaller than the window.
    """
    for scales in range(len(MS_SSIM_WEIGHTS), 0, -1):
        fits = all(
            s // max(1, scales - 1) ** 2 > kernel_size - 1 and s / 2 ** (scales - 1) >= kernel_size
            for s in spatial_size
        )
        if fits:
            weights = MS_SSIM_WEIGHTS[:scales]
            total = sum(weights)
            return {
                "kernel_size": kernel_size,
                "kernel_sigma": kernel_sigma,
                "scales": scales,
                "weights": [round(w / total, 4) for w in weights],
            }
    raise ValueError(
        f"ms_ssim_settings: images of size {list(spatial_size)} are smaller than the {kernel_size}-pixel window; "
        "use a smaller kernel_size."
    )


@torch.no_grad()
def ms_ssim_diversity(images: torch.Tensor, max_pairs: int = 300, seed: int = 0) -> float:
    """Mean MS-SSIM between pairs of distinct images of one set (N, C, *spatial) in [0, 1] (Odena et al., 2017):
    near 1 = the images look alike (mode collapse), lower = more diverse. Compare it with the real images' value.

    Every pair when there are at most ``max_pairs``, else ``max_pairs`` pairs drawn with ``seed``. Settings from
    :func:`ms_ssim_settings`.

    Raises:
        ValueError: fewer than two images.
    """
    n = images.shape[0]
    if n < 2:
        raise ValueError(f"ms_ssim_diversity needs at least 2 images, got {n}.")
    pairs = list(itertools.combinations(range(n), 2))
    if len(pairs) > max_pairs:
        chosen = np.random.default_rng(seed).choice(len(pairs), size=max_pairs, replace=False)
        pairs = [pairs[i] for i in sorted(chosen)]
    first, second = (torch.tensor(side) for side in zip(*pairs))
    s = ms_ssim_settings(images.shape[2:])
    metric = MultiScaleSSIMMetric(
        spatial_dims=images.ndim - 2,
        data_range=1.0,
        kernel_size=s["kernel_size"],
        kernel_sigma=s["kernel_sigma"],
        weights=s["weights"],
    )
    x = images.float().clamp(0, 1)
    return float(metric(x[first], x[second]).mean())


def distribution_scores(
    real_features: torch.Tensor,
    fake_features: torch.Tensor,
    fake_images: torch.Tensor,
    seed: int = 0,
) -> dict[str, Any]:
    """FID, KID and MS-SSIM diversity of one synthetic set (one center's style) against the real reference set.

    Args:
        real_features: features of the real reference images (:func:`encoder_features`).
        fake_features: features of the synthetic images.
        fake_images: the synthetic images in [0, 1] (for the MS-SSIM diversity).
        seed: seed of the MS-SSIM pair draw.

    Returns:
        ``{"fid", "kid", "ms_ssim", "images": synthetic images, "real_images": reference images}``.
    """
    return {
        "fid": round(frechet_distance(real_features, fake_features), 3),
        "kid": float(f"{kernel_inception_distance(real_features, fake_features):.4g}"),
        "ms_ssim": round(ms_ssim_diversity(fake_images, seed=seed), 4),
        "images": int(fake_features.shape[0]),
        "real_images": int(real_features.shape[0]),
    }
