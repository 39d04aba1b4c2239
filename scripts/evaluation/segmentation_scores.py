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
"""Downstream segmentation: Dice and 95% Hausdorff distance of a segmentation network on a center's real test set."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from monai.networks.utils import one_hot

from scripts.evaluation.image_quality import load_pairs

__all__ = ["segment", "segmentation_scores", "center_scores"]


@torch.no_grad()
def segment(network: torch.nn.Module, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Arg-max class maps (N, 1, *spatial) of ``network`` for images (N, C, *spatial)."""
    network.eval()
    device = next(network.parameters()).device
    out = [
        network(images[i : i + batch_size].to(device)).argmax(1, keepdim=True).cpu()
        for i in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(out)


def segmentation_scores(
    pred: torch.Tensor, label: torch.Tensor, class_names: Sequence[str], image_names: Sequence[str] | None = None
) -> dict[str, dict[str, float | int]]:
    """Per foreground class: Dice and 95% Hausdorff distance (pixels) of every image and their means, with
    ``monai.metrics``.

    Images where a class is absent from the ground truth are left out of that class's means (``n`` counts the images
    used). Where the network predicts nothing of a present class, the Hausdorff distance is undefined; it is then
    counted as the image diagonal (the largest possible distance), so missing a structure is never rewarded.

    Args:
        pred: predicted class maps (N, 1, *spatial).
        label: ground-truth class maps (N, 1, *spatial).
        class_names: names of all classes, background first.
        image_names: one name per image; when given, each class also lists the ``images`` its per-image values are of.

    Returns:
        ``{class name: {"dice": mean, "hd95": mean, "n": images with the class, "dice_per_image": [...],
        "hd95_per_image": [...]}}`` for every foreground class (per-image values in image order, of the ``n`` images
        with the class, for bootstrap intervals; with ``image_names``, also ``"images": [...]``, their names).
    """
    k = len(class_names)
    p1, y1 = one_hot(pred.long(), k), one_hot(label.long(), k)
    dice = DiceMetric(include_background=False, reduction="none", ignore_empty=True)(p1, y1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(p1, y1)
    diagonal = math.sqrt(sum(s * s for s in pred.shape[2:]))
    present = y1[:, 1:].flatten(2).any(-1)
    out = {}
    for j, name in enumerate(class_names[1:]):
        rows = present[:, j]
        n = int(rows.sum())
        d = dice[rows, j]
        h = hd[rows, j]
        h = torch.where(torch.isfinite(h), h, torch.full_like(h, diagonal))
        out[name] = {
            "dice": round(float(d.mean()), 3) if n else None,
            "hd95": round(float(h.mean()), 2) if n else None,
            "n": n,
            "dice_per_image": [round(float(v), 3) for v in d],
            "hd95_per_image": [round(float(v), 2) for v in h],
        }
        if image_names is not None:
            out[name]["images"] = [str(image_names[i]) for i in torch.nonzero(rows).flatten().tolist()]
    return out


def center_scores(
    network: torch.nn.Module,
    center_dir: str | os.PathLike,
    class_names: Sequence[str],
    spatial_dims: int,
    spatial_size: Sequence[int],
    key: str = "test",
    image_names: bool = False,
    **options: Any,
) -> dict[str, dict[str, float | int]]:
    """:func:`segmentation_scores` of ``network`` on a center's real ``key`` pairs (images scaled to [0, 1], as the
    segmentation workflow trains); with ``image_names``, each class also lists its images' file names. ``options``:
    the site's preprocessing options (:py:func:`~scripts.evaluation.image_quality.load_pairs`)."""
    images, labels, names = load_pairs(center_dir, spatial_dims, spatial_size, key, minv=0.0, **options)
    return segmentation_scores(segment(network, images), labels, class_names, names if image_names else None)
