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
"""The one preprocessing chain of every workflow: read a pair as the visit reads it (load, channel, resize, scale)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    Resized,
    ScaleIntensityd,
)

__all__ = ["EnsureSpatialDimsd", "preprocessing"]


class EnsureSpatialDimsd(MapTransform):
    """Drop trailing singleton spatial axes (2D slices stored as (H, W, 1)) and check the spatial rank; a tracked
    item's ``spatial_shape`` metadata follows.

    Args:
        keys: keys of channel-first arrays to fix.
        spatial_dims: expected number of spatial dimensions.

    Raises:
        ValueError: an array has another spatial rank, naming its file when known.
    """

    def __init__(self, keys: KeysCollection, spatial_dims: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spatial_dims = spatial_dims

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            while x.ndim - 1 > self.spatial_dims and x.shape[-1] == 1:
                x = x[..., 0]
            if x is not d[key] and isinstance(x, MetaTensor):  # a writer reads the item's rank from its metadata
                x.meta["spatial_shape"] = np.asarray(x.shape[1:])
            if x.ndim - 1 != self.spatial_dims:
                src = getattr(x, "meta", {}).get("filename_or_obj", key)
                raise ValueError(
                    f"{src}: {key} has shape {tuple(x.shape[1:])}, expected {self.spatial_dims} spatial dimensions."
                )
            d[key] = x
        return d


def preprocessing(
    spatial_dims: int,
    spatial_size: Sequence[int] | None,
    intensity_range: Sequence[float] | None = (-1.0, 1.0),
    keys: Sequence[str] = ("image", "label"),
    label_dtype: torch.dtype = torch.uint8,
    track_meta: bool = False,
) -> Compose:
    """The deterministic preprocessing of an image/label pair (or of label maps alone), shared by training,
    segmentation, synthesis and evaluation so that they all see the same pixels.

    ``LoadImaged`` (nibabel for NIfTI, ITK for the rest), channel first, trailing singleton spatial axes dropped
    (2D slices stored as (H, W, 1)), resized to ``spatial_size`` (images (tri)linear, labels nearest), image
    intensities min-max scaled to ``intensity_range``, typed tensors (image float32, label ``label_dtype``).

    Args:
        spatial_dims: 2 or 3.
        spatial_size: the size every item is resized to (None: kept at its stored size).
        intensity_range: ``(min, max)`` of the scaled image: ``(-1, 1)`` for the GAN (Tanh output), ``(0, 1)`` for
            segmentation and reports.
        keys: ``("image", "label")`` or ``("label",)`` (synthesis reads label maps only).
        label_dtype: dtype of the label map.
        track_meta: keep MONAI's metadata (affine, file name) on the tensors.
    """
    keys = list(keys)
    linear = "bilinear" if spatial_dims == 2 else "trilinear"
    modes = ["nearest" if k == "label" else linear for k in keys]
    dtypes = [label_dtype if k == "label" else torch.float32 for k in keys]
    transforms: list[Any] = [
        LoadImaged(keys=keys, image_only=True),
        EnsureChannelFirstd(keys=keys),
        EnsureSpatialDimsd(keys=keys, spatial_dims=spatial_dims),
    ]
    if spatial_size is not None:
        transforms.append(Resized(keys=keys, spatial_size=spatial_size, mode=modes))
    if "image" in keys and intensity_range is not None:
        transforms.append(ScaleIntensityd(keys="image", minv=intensity_range[0], maxv=intensity_range[1]))
    transforms.append(EnsureTyped(keys=keys, dtype=dtypes, track_meta=track_meta))
    return Compose(transforms)
