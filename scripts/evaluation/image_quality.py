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
"""Image quality of a generator on paired test data, and the visit-by-center quality matrix of a sequence."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.metrics import MAEMetric, PSNRMetric, SSIMMetric

from scripts.data.centers import center_datalist
from scripts.data.transforms import preprocessing
from scripts.evaluation.synthesis import generate_images
from scripts.handoff import load_handoff
from scripts.networks import TDGANGenerator

__all__ = [
    "generator_from_handoff",
    "load_pairs",
    "image_metrics",
    "generator_quality",
    "quality_matrix",
    "forgetting",
    "measured_forgetting",
]

logger = logging.getLogger(__name__)

METRICS = ("ssim", "psnr", "mae")
DECIMALS = {"ssim": 3, "psnr": 2, "mae": 4}


def load_pairs(
    center_dir: str | os.PathLike,
    spatial_dims: int,
    spatial_size: Sequence[int],
    key: str = "test",
    minv: float = -1.0,
    **options: Any,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """A center's ``key`` list read as the visit reads it, as stacked tensors: images (N, C, *spatial) in [minv, 1],
    labels (N, 1, *spatial), and the image file names. ``options``: the site's keyword options of
    :py:func:`~scripts.data.transforms.preprocessing` (``label_mapping``, ``intensity_channel_wise``,
    ``intensity_window``)."""
    items = center_datalist(center_dir, code=0, key=key)
    load = preprocessing(spatial_dims, spatial_size, (minv, 1.0), **options)
    data = [load(item) for item in items]
    return (
        torch.stack([d["image"] for d in data]),
        torch.stack([d["label"] for d in data]),
        [str(item["image"]) for item in items],
    )


def image_metrics(fake: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
    """Mean SSIM, PSNR (dB) and MAE between two batches of images in [-1, 1], computed on [0, 1] with
    ``monai.metrics`` (SSIM: 11-pixel Gaussian window, data range 1)."""
    fake01 = ((fake.clamp(-1, 1) + 1) / 2).float()
    real01 = ((real.clamp(-1, 1) + 1) / 2).float()
    spatial_dims = fake.ndim - 2
    out = {}
    for name, metric in (
        ("ssim", SSIMMetric(spatial_dims=spatial_dims, data_range=1.0)),
        ("psnr", PSNRMetric(max_val=1.0)),
        ("mae", MAEMetric()),
    ):
        metric(y_pred=fake01, y=real01)
        out[name] = float(metric.aggregate().mean())
        metric.reset()
    return out


def generator_quality(
    generator: TDGANGenerator, code: int, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 16
) -> dict[str, float]:
    """SSIM / PSNR / MAE of G(label, code) against the paired real images."""
    fake = generate_images(generator, labels, torch.full((labels.shape[0],), int(code)), batch_size)
    return image_metrics(fake, images)


def generator_from_handoff(
    handoff: str | os.PathLike, device: torch.device | str = "cpu"
) -> tuple[TDGANGenerator, Any]:
    """The generator a hand-off describes, with its weights, in eval mode; and the hand-off itself."""
    h = load_handoff(handoff)
    generator = TDGANGenerator(**h.network)
    generator.load_state_dict(h.generator)
    return generator.to(device).eval(), h


def quality_matrix(
    sequence_file: str | os.PathLike,
    data_root: str | os.PathLike,
    spatial_size: Sequence[int],
    key: str = "test",
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """The visit-by-center quality matrix of a sequence: after every visit, the generator's quality on the held-out
    pairs of every center seen so far, under that center's code.

    Args:
        sequence_file: the ``sequence.json`` a sequence run writes (visits in order with their hand-offs).
        data_root: folder with the center folders.
        spatial_size: size the test pairs are read at (the generator's training size).
        key: the data list holding the held-out pairs.
        device: where to run the generator.

    Returns:
        ``{"visits": [tags], "centers": [names], "ssim"|"psnr"|"mae": [[value or None per center] per visit]}``;
        None where a center had not been visited yet.
    """
    seq = json.loads(Path(sequence_file).read_text())
    centers: list[str] = []
    for visit in seq["visits"]:
        centers += [c for c in visit["centers"] if c not in centers]
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    result: dict[str, Any] = {"visits": [], "centers": centers, **{m: [] for m in METRICS}}
    for visit in seq["visits"]:
        generator, h = generator_from_handoff(visit["handoff"], device)
        codes = h.codes
        if not pairs:
            dims = h.network["spatial_dims"]
            pairs = {c: load_pairs(Path(data_root) / c, dims, spatial_size, key)[:2] for c in centers}
        row = {m: [] for m in METRICS}
        for c in centers:
            if c not in codes:
                for m in METRICS:
                    row[m].append(None)
                continue
            q = generator_quality(generator, codes[c], *pairs[c])
            for m in METRICS:
                row[m].append(round(q[m], DECIMALS[m]))
        result["visits"].append(Path(visit["handoff"]).stem)
        for m in METRICS:
            result[m].append(row[m])
        logger.info(f"quality after {Path(visit['handoff']).stem}: SSIM {dict(zip(centers, row['ssim']))}")
    return result


def forgetting(matrix: dict[str, Any], metric: str = "ssim") -> dict[str, float | None]:
    """Per center: quality right after the first visit that included it minus quality after the last visit
    (positive = forgotten; for MAE, where lower is better, the sign is flipped so positive still means worse)."""
    rows = matrix[metric]
    sign = -1.0 if metric == "mae" else 1.0
    out: dict[str, float | None] = {}
    for j, c in enumerate(matrix["centers"]):
        first = next((r[j] for r in rows if r[j] is not None), None)
        last = rows[-1][j] if rows else None
        out[c] = None if first is None or last is None else round(sign * (first - last), DECIMALS[metric])
    return out


def measured_forgetting(matrix: dict[str, Any], metric: str = "ssim") -> dict[str, float | None]:
    """:func:`forgetting` where it was measured: None (not 0) for a center that no visit came after, i.e. the last
    center of a sequence and every center of a single-visit method, which had no later visit to forget it in."""
    rows = matrix[metric]
    out = forgetting(matrix, metric)
    for j, c in enumerate(matrix["centers"]):
        first = next((i for i, r in enumerate(rows) if r[j] is not None), None)
        if first is None or first == len(rows) - 1:
            out[c] = None
    return out
