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
"""Memorisation audit: how close each synthetic image is to its nearest real training image, against real-to-real."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from scripts.data.centers import center_datalist
from scripts.evaluation.image_quality import load_pairs

__all__ = ["rms_distances", "nearest_neighbours", "audit_center", "audit_dataset"]


def rms_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Root-mean-square intensity distance between every image of ``a`` (N, ...) and every image of ``b`` (M, ...):
    an (N, M) matrix."""
    a2, b2 = a.flatten(1).double(), b.flatten(1).double()
    return (torch.cdist(a2, b2) / math.sqrt(a2.shape[1])).float()


def nearest_neighbours(d: torch.Tensor, exclude_self: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance to, and index of, each row's nearest column (the diagonal left out when ``exclude_self``)."""
    if exclude_self:
        d = d.clone()
        d.fill_diagonal_(float("inf"))
    return d.min(dim=1)


def audit_center(
    synthetic: torch.Tensor,
    real: torch.Tensor,
    quantile: float = 0.05,
    real_names: Sequence[str] | None = None,
    synthetic_names: Sequence[str] | None = None,
    paired: Sequence[int | None] | None = None,
) -> dict[str, object]:
    """Compare each synthetic image with its nearest real training image of the same center.

    The reference is how close real images come to each other: the distance from every real training image to its
    nearest other real training image. A synthetic image is flagged as a near copy when its nearest real image is
    closer than the ``quantile`` of those real-to-real distances (closer than 95 % of real images are to any other
    real image, by default).

    Args:
        synthetic: synthetic images (N, C, *spatial), on the same intensity scale as ``real``.
        real: the center's real training images (M, C, *spatial), M >= 2.
        quantile: real-to-real nearest-neighbour quantile used as the near-copy threshold.
        real_names: names of the real images (reported for flagged samples).
        synthetic_names: names of the synthetic images.
        paired: for each synthetic image, the index of the real image whose label map it was made from (None when
            it came from another label map); the result then says how many flagged images are nearest to their own
            paired real image (a generator reproducing the image of a training label map) rather than to another.

    Returns:
        summary distances, the threshold, the flagged fraction and the flagged samples with their nearest real image.
    """
    if real.shape[0] < 2:
        raise ValueError(f"the audit needs at least 2 real training images, got {real.shape[0]}.")
    d_real, _ = nearest_neighbours(rms_distances(real, real), exclude_self=True)
    d_syn, idx = nearest_neighbours(rms_distances(synthetic, real))
    threshold = float(torch.quantile(d_real, quantile))
    flagged = (d_syn < threshold).nonzero().flatten().tolist()
    flagged_paired = None
    if paired is not None:
        flagged_paired = sum(1 for i in flagged if paired[i] is not None and int(idx[i]) == paired[i])
    return {
        "synthetic": int(synthetic.shape[0]),
        "real": int(real.shape[0]),
        "synthetic_to_real_median": round(float(d_syn.median()), 4),
        "synthetic_to_real_min": round(float(d_syn.min()), 4),
        "real_to_real_median": round(float(d_real.median()), 4),
        "real_to_real_min": round(float(d_real.min()), 4),
        "threshold": round(threshold, 4),
        "flagged": len(flagged),
        "flagged_fraction": round(len(flagged) / max(1, synthetic.shape[0]), 4),
        "flagged_nearest_to_own_pair": flagged_paired,
        "flagged_samples": [
            {
                "synthetic": synthetic_names[i] if synthetic_names else i,
                "nearest_real": real_names[int(idx[i])] if real_names else int(idx[i]),
                "distance": round(float(d_syn[i]), 4),
            }
            for i in flagged
        ],
    }


def audit_dataset(
    synthetic_dir: str | os.PathLike,
    data_root: str | os.PathLike,
    spatial_dims: int,
    spatial_size: Sequence[int],
    quantile: float = 0.05,
) -> dict[str, dict[str, object]]:
    """:func:`audit_center` for every center style in a synthetic dataset (written by ``configs/inference.json``),
    against that center's real training images under ``data_root``. Images are compared scaled to [0, 1]."""
    synthetic_dir = Path(synthetic_dir)
    meta = json.loads((synthetic_dir / "dataset.json").read_text())
    images, _, names = load_pairs(synthetic_dir, spatial_dims, spatial_size, key="training", minv=0.0)
    centers = [item["center"] for item in meta["training"]]
    sources = [item.get("label_source") for item in meta["training"]]
    out = {}
    for c in dict.fromkeys(centers):
        rows = [i for i, x in enumerate(centers) if x == c]
        center_dir = Path(data_root) / c
        real, _, real_names = load_pairs(center_dir, spatial_dims, spatial_size, key="training", minv=0.0)
        labels = [f"{c}/{os.path.relpath(it['label'], center_dir)}" for it in center_datalist(center_dir, 0)]
        paired = [labels.index(sources[i]) if sources[i] in labels else None for i in rows]
        out[c] = audit_center(
            images[rows],
            real,
            quantile,
            [os.path.basename(n) for n in real_names],
            [os.path.basename(names[i]) for i in rows],
            paired,
        )
    return out
