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
"""The one preprocessing chain of every workflow: read a pair as the visit reads it (load, channel, map the site's label
values to classes, resize, scale)."""

from __future__ import annotations

import math
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
    MapLabelValued,
    MapTransform,
    Resized,
    ScaleIntensityd,
    ScaleIntensityRanged,
)

from scripts.data.checks import InputError, check_label_mapping, integer_value, unmapped_label_problem

__all__ = [
    "EnsureSpatialDimsd",
    "LabelMappingd",
    "check_intensity_window",
    "check_label_mapping",  # defined in scripts.data.checks, importable here as before
    "mapped_label_names",
    "preprocessing",
    "unmapped_label_problem",  # defined in scripts.data.checks, importable here as before
]


def check_intensity_window(window: Sequence[float] | None) -> list[float] | None:
    """An ``intensity_window`` setting (a CT window ``[low, high]``, e.g. ``[-1000, 400]`` HU) checked.

    Raises:
        InputError: not two finite numbers with low < high (one line).
    """
    if window is None:
        return None
    ok = (
        isinstance(window, Sequence)
        and not isinstance(window, str)
        and len(window) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in window)
        and window[0] < window[1]
    )
    if not ok:
        raise InputError(
            f"intensity_window is {window!r:.80}; expected null or [low, high] with low < high, e.g. [-1000, 400] "
            "(a CT window in HU)."
        )
    return [float(window[0]), float(window[1])]


def mapped_label_names(labels: Mapping[Any, Any], label_mapping: Mapping[Any, Any] | None) -> dict[str, str]:
    """A ``dataset.json``'s ``labels`` (label value -> name) as the names of the classes the label maps hold once read:
    as they are without ``label_mapping``; with it, each class named by the values mapped to it, joined by " + " (e.g.
    BraTS ``{"1": "necrotic core", "4": "enhancing tumour"}`` both mapped to 3: ``{"3": "necrotic core + enhancing
    tumour"}``), in class order."""
    mapping = check_label_mapping(label_mapping)
    if mapping is None:
        return {str(k): str(v) for k, v in labels.items()}
    names: dict[int, list[str]] = {}
    for value, name in labels.items():
        k = integer_value(value)
        if k is not None and k in mapping and str(name) not in names.setdefault(mapping[k], []):
            names[mapping[k]].append(str(name))
    return {str(c): " + ".join(names[c]) for c in sorted(names)}


class LabelMappingd(MapTransform):
    """Map a site's label values onto the bundle's classes (``label_mapping``, e.g. BraTS ``{0: 0, 1: 1, 2: 2, 4: 3}``)
    with MONAI's ``MapLabelValued``, and refuse a label map holding a value the mapping does not name, which
    ``MapLabelValued`` would leave as it is.

    Args:
        keys: keys of the label maps.
        label_mapping: label value -> class (see :py:func:`check_label_mapping`).
        num_classes: the configuration's classes, when known (the mapping's classes must lie below it).

    Raises:
        InputError: a malformed mapping (at construction), or a label map with values the mapping does not name (one
            line naming the file and the values).
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_mapping: Mapping[Any, Any],
        num_classes: int | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        mapping = check_label_mapping(label_mapping, num_classes)
        if mapping is None:
            raise InputError("LabelMappingd needs a label_mapping; leave the transform out for none.")
        self.label_mapping = mapping
        self.mapper = MapLabelValued(
            keys, list(mapping), list(mapping.values()), dtype=np.float32, allow_missing_keys=allow_missing_keys
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            source = getattr(d[key], "meta", {}).get("filename_or_obj", key)
            values = np.unique(np.asarray(d[key])).tolist()
            problem = unmapped_label_problem(source, values, self.label_mapping)
            if problem:
                raise InputError(problem)
        return self.mapper(d)


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
    label_mapping: Mapping[Any, Any] | None = None,
    num_classes: int | None = None,
    intensity_channel_wise: bool = False,
    intensity_window: Sequence[float] | None = None,
) -> Compose:
    """The deterministic preprocessing of an image/label pair (or of label maps alone), shared by training,
    segmentation, synthesis and evaluation so that they all see the same pixels.

    ``LoadImaged`` (nibabel for NIfTI, ITK for the rest), channel first, trailing singleton spatial axes dropped
    (2D slices stored as (H, W, 1)), the site's label values mapped to classes (``label_mapping``, when given:
    :py:class:`LabelMappingd`), resized to ``spatial_size`` (images (tri)linear, labels nearest), image intensities
    scaled to ``intensity_range`` (by default one min-max over all channels; per channel with
    ``intensity_channel_wise``; a fixed window clipped and scaled with ``intensity_window``), typed tensors (image
    float32, label ``label_dtype``). The defaults are the chain every workflow had before these options.

    Args:
        spatial_dims: 2 or 3.
        spatial_size: the size every item is resized to (None: kept at its stored size).
        intensity_range: ``(min, max)`` of the scaled image: ``(-1, 1)`` for the GAN (Tanh output), ``(0, 1)`` for
            segmentation and reports.
        keys: ``("image", "label")`` or ``("label",)`` (synthesis reads label maps only).
        label_dtype: dtype of the label map.
        track_meta: keep MONAI's metadata (affine, file name) on the tensors.
        label_mapping: None, or the site's label value -> class (:py:func:`check_label_mapping`); a label file with
            a value it does not name is refused.
        num_classes: the configuration's classes, to check ``label_mapping`` against (None: not checked).
        intensity_channel_wise: min-max scale each image channel on its own (MONAI ``ScaleIntensityd``
            ``channel_wise``), e.g. MRI sequences of unrelated ranges stacked as channels.
        intensity_window: ``[low, high]``: clip the image to this fixed window and scale it to ``intensity_range``
            (MONAI ``ScaleIntensityRanged``), e.g. a CT window in HU; the same for every image, unlike a min-max.

    Raises:
        InputError: a malformed ``label_mapping`` or ``intensity_window``, or both intensity options (one line).
    """
    keys = list(keys)
    mapping = check_label_mapping(label_mapping, num_classes)
    window = check_intensity_window(intensity_window)
    if not isinstance(intensity_channel_wise, bool):
        raise InputError(f"intensity_channel_wise must be true or false, got {intensity_channel_wise!r}.")
    if window is not None and intensity_channel_wise:
        raise InputError(
            f"intensity_window {window} and intensity_channel_wise are both set; expected one: a window scales every "
            "channel alike."
        )
    linear = "bilinear" if spatial_dims == 2 else "trilinear"
    modes = ["nearest" if k == "label" else linear for k in keys]
    dtypes = [label_dtype if k == "label" else torch.float32 for k in keys]
    transforms: list[Any] = [
        LoadImaged(keys=keys, image_only=True),
        EnsureChannelFirstd(keys=keys),
        EnsureSpatialDimsd(keys=keys, spatial_dims=spatial_dims),
    ]
    if mapping is not None and "label" in keys:
        transforms.append(LabelMappingd(keys="label", label_mapping=mapping, num_classes=num_classes))
    if spatial_size is not None:
        transforms.append(Resized(keys=keys, spatial_size=spatial_size, mode=modes))
    if "image" in keys and intensity_range is not None:
        low, high = intensity_range
        if window is not None:
            transforms.append(
                ScaleIntensityRanged(keys="image", a_min=window[0], a_max=window[1], b_min=low, b_max=high, clip=True)
            )
        else:
            transforms.append(ScaleIntensityd(keys="image", minv=low, maxv=high, channel_wise=intensity_channel_wise))
    transforms.append(EnsureTyped(keys=keys, dtype=dtypes, track_meta=track_meta))
    return Compose(transforms)
