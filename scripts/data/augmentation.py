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
"""Paired random augmentation for GAN training: label map and image moved together, intensities of the image only."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.transforms import (
    EnsureTyped,
    MapTransform,
    Rand2DElasticd,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    ScaleIntensityRanged,
)

__all__ = ["paired_augmentation"]


def paired_augmentation(
    spatial_dims: int,
    spatial_size: Sequence[int],
    affine_prob: float = 0.5,
    elastic_prob: float = 0.25,
    flip_prob: float = 0.5,
    intensity_prob: float = 0.25,
    flip_axes: Sequence[int] = (),
    rotate: float = 0.15,
    scale: float = 0.1,
    translate: float = 0.05,
    elastic_spacing: float = 0.25,
    elastic_magnitude: float = 0.02,
    gamma: tuple[float, float] = (0.85, 1.15),
    noise_std: float = 0.02,
    image_key: str = "image",
    label_key: str = "label",
) -> list[MapTransform]:
    """MONAI dictionary transforms that augment an image/label training pair, for appending after a cached
    deterministic preprocessing (e.g. ``"$scripts.data.augmentation.paired_augmentation(@spatial_dims,
    @spatial_size)"`` added to ``train#preprocessing#transforms``; ``CacheDataset`` caches up to the first random one).

    Spatial transforms draw one set of parameters per item and apply it to both keys: the image bilinear (border
    padding), the label nearest-neighbour (padding with background 0), so the label keeps its integer classes and
    stays on the image. Intensity transforms touch the image only: a range-preserving gamma
    (``RandAdjustContrastd``) and Gaussian noise, then a clip to [-1, 1] (the range the preprocessing scales images
    to and the generator's Tanh can reach). The list ends by making the image float32 and the label uint8 again.

    Args:
        spatial_dims: 2 or 3.
        spatial_size: the (preprocessed) spatial size; lengths below are fractions of it.
        affine_prob: probability of a random rotation / scale / shift (``RandAffined``).
        elastic_prob: probability of a random elastic deformation (``Rand2DElasticd`` / ``Rand3DElasticd``).
        flip_prob: probability of flipping each axis of ``flip_axes`` (``RandFlipd``).
        intensity_prob: probability of each intensity transform.
        flip_axes: spatial axes where a mirrored pair is still plausible (the demo's left-right axis is 1); none by
            default, so no anatomy is turned upside down unasked.
        rotate: rotation range in radians (+-, about each axis in 3D).
        scale: relative scale range (+-).
        translate: shift range as a fraction of each side (+-).
        elastic_spacing: spacing of the elastic control points (2D; the smoothing correlation length in 3D), as a
            fraction of the shortest side.
        elastic_magnitude: std of the elastic displacement, as a fraction of the shortest side.
        gamma: gamma range of ``RandAdjustContrastd``.
        noise_std: upper bound of the Gaussian noise std (on the [-1, 1] scale).
        image_key: key of the image.
        label_key: key of the label map.

    Returns:
        the transforms, in order.

    Raises:
        ValueError: ``spatial_dims`` not 2 or 3, a ``spatial_size`` of another length, or a probability outside [0, 1].
    """
    if spatial_dims not in (2, 3) or len(spatial_size) != spatial_dims:
        raise ValueError(
            f"paired_augmentation needs spatial_dims 2 or 3 and a spatial_size of that length, got {spatial_dims} and "
            f"{list(spatial_size)}."
        )
    probs = {"affine_prob": affine_prob, "elastic_prob": elastic_prob, "flip_prob": flip_prob}
    probs["intensity_prob"] = intensity_prob
    bad = {k: v for k, v in probs.items() if not 0.0 <= v <= 1.0}
    if bad:
        raise ValueError(f"probabilities must lie in [0, 1], got {bad}.")
    if any(not 0 <= int(a) < spatial_dims for a in flip_axes):
        raise ValueError(f"flip_axes {list(flip_axes)} must be spatial axes 0..{spatial_dims - 1}.")
    keys = [image_key, label_key]
    spatial = {"mode": ["bilinear", "nearest"], "padding_mode": ["border", "zeros"]}
    side = float(min(spatial_size))
    spacing, magnitude = max(2.0, elastic_spacing * side), elastic_magnitude * side
    out: list[MapTransform] = [RandFlipd(keys, prob=flip_prob, spatial_axis=int(a)) for a in flip_axes]
    out.append(
        RandAffined(
            keys,
            prob=affine_prob,
            rotate_range=[rotate] * (1 if spatial_dims == 2 else 3),
            scale_range=[scale] * spatial_dims,
            translate_range=[translate * s for s in spatial_size],
            **spatial,
        )
    )
    if spatial_dims == 2:
        out.append(
            Rand2DElasticd(keys, spacing=spacing, magnitude_range=(0.0, magnitude), prob=elastic_prob, **spatial)
        )
    else:
        # the same displacement std as in 2D: Rand3DElastic smooths a uniform(-1, 1) field with a Gaussian of sigma,
        # whose std is then about magnitude / sqrt(3) / (4 pi sigma^2) ** (3 / 4)
        sigma = spacing / 2
        scaled = magnitude * math.sqrt(3.0) * (4 * math.pi * sigma**2) ** 0.75
        out.append(
            Rand3DElasticd(
                keys, sigma_range=(sigma, sigma), magnitude_range=(0.0, scaled), prob=elastic_prob, **spatial
            )
        )
    out += [
        RandAdjustContrastd(image_key, prob=intensity_prob, gamma=gamma),
        RandGaussianNoised(image_key, prob=intensity_prob, std=noise_std, sample_std=True),
        ScaleIntensityRanged(image_key, a_min=-1.0, a_max=1.0, b_min=-1.0, b_max=1.0, clip=True),
        EnsureTyped(keys, dtype=[torch.float32, torch.uint8], track_meta=False),
    ]
    return out
