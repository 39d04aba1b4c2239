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
"""Memorisation audit: near copies (each synthetic image against its nearest real training image, measured against
real-to-real), the memorisation gap (quality on training pairs minus held-out pairs) and hand-off reconstruction (what
a hand-off's label bank lets its holder rebuild)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from scripts.data.centers import center_datalist, center_subjects
from scripts.evaluation.image_quality import DECIMALS, image_metrics, load_pairs
from scripts.evaluation.synthesis import generate_images

__all__ = [
    "rms_distances",
    "nearest_neighbours",
    "audit_center",
    "source_pairs",
    "audit_dataset",
    "memorisation_gap",
    "handoff_reconstruction",
]


def rms_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Root-mean-square intensity distance between every image of ``a`` (N, ...) and every image of ``b`` (M, ...):
    an (N, M) matrix."""
    a2, b2 = a.flatten(1).double(), b.flatten(1).double()
    return (torch.cdist(a2, b2) / math.sqrt(a2.shape[1])).float()


def nearest_neighbours(
    d: torch.Tensor, exclude_self: bool = False, subjects: Sequence[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance to, and index of, each row's nearest column (the diagonal left out when ``exclude_self``; with
    ``subjects``, one per row and column of a square ``d``, every column of the row's own subject left out too: the
    neighbouring slice of the same patient is not another patient)."""
    if exclude_self or subjects is not None:
        d = d.clone()
        d.fill_diagonal_(float("inf"))
    if subjects is not None:
        if len(subjects) != d.shape[0] or d.shape[0] != d.shape[1]:
            raise ValueError(
                f"need one subject per image of a square distance matrix, got {len(subjects)} for {d.shape}."
            )
        index = {s: i for i, s in enumerate(dict.fromkeys(subjects))}
        groups = torch.tensor([index[s] for s in subjects])
        same = groups[:, None] == groups[None, :]
        if bool(same.all()):
            raise ValueError(f"the audit needs real images of at least 2 subjects, got {len(subjects)} of one.")
        d = d.masked_fill(same, float("inf"))
    return d.min(dim=1)


def audit_center(
    synthetic: torch.Tensor,
    real: torch.Tensor,
    quantile: float = 0.05,
    real_names: Sequence[str] | None = None,
    synthetic_names: Sequence[str] | None = None,
    paired: Sequence[int | None] | None = None,
    real_subjects: Sequence[str] | None = None,
    nearest: int = 0,
) -> dict[str, object]:
    """Compare each synthetic image with its nearest real training image of the same center.

    The reference is how close real images come to each other: the distance from every real training image to its
    nearest real training image of another subject (with ``real_subjects``; otherwise every image is its own subject
    and the nearest other image counts). A synthetic image is flagged as a near copy when its nearest real image is
    closer than the ``quantile`` of those real-to-real distances (closer than 95 % of real images are to another
    subject's, by default).

    Args:
        synthetic: synthetic images (N, C, *spatial), on the same intensity scale as ``real``.
        real: the center's real training images (M, C, *spatial), M >= 2.
        quantile: real-to-real nearest-neighbour quantile used as the near-copy threshold.
        real_names: names of the real images (reported for flagged samples).
        synthetic_names: names of the synthetic images.
        paired: for each synthetic image, the index of the real image whose label map it was made from (None when
            it came from another label map); the result then says how many flagged images are nearest to their own
            paired real image (a generator reproducing the image of a training label map) rather than to another.
        real_subjects: the subject of each real image (several slices of one patient share one), or None.
        nearest: how many of the closest synthetic-real pairs to list as ``nearest_pairs`` (closest first, near copy
            or not, with their indices into ``synthetic`` and ``real``); 0 lists none and leaves the key out.

    Returns:
        summary distances, the threshold, the flagged fraction and the flagged samples with their nearest real image
        (and the ``nearest`` closest pairs).
    """
    if real.shape[0] < 2:
        raise ValueError(f"the audit needs at least 2 real training images, got {real.shape[0]}.")
    d_real, _ = nearest_neighbours(rms_distances(real, real), exclude_self=True, subjects=real_subjects)
    d_syn, idx = nearest_neighbours(rms_distances(synthetic, real))
    threshold = float(torch.quantile(d_real, quantile))
    flagged = (d_syn < threshold).nonzero().flatten().tolist()
    flagged_paired = None
    if paired is not None:
        flagged_paired = sum(1 for i in flagged if paired[i] is not None and int(idx[i]) == paired[i])
    out = {
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
    if nearest > 0:
        out["nearest_pairs"] = [
            {
                "synthetic": synthetic_names[i] if synthetic_names else i,
                "nearest_real": real_names[int(idx[i])] if real_names else int(idx[i]),
                "distance": round(float(d_syn[i]), 4),
                "near_copy": float(d_syn[i]) < threshold,
                "synthetic_index": i,
                "real_index": int(idx[i]),
            }
            for i in d_syn.argsort()[:nearest].tolist()
        ]
    return out


def source_pairs(center_dir: str | os.PathLike, label_sources: Sequence[str | None]) -> list[int | None]:
    """For each synthetic image's ``label_source`` (``"<center>/<label path in the center folder>"``, as the
    synthesis records it in ``dataset.json``), the index of the center's training pair whose label map it was made
    from, or None (a new label map, or another center's)."""
    center_dir = Path(center_dir)
    labels = [f"{center_dir.name}/{os.path.relpath(it['label'], center_dir)}" for it in center_datalist(center_dir, 0)]
    return [labels.index(s) if s in labels else None for s in label_sources]


def audit_dataset(
    synthetic_dir: str | os.PathLike,
    data_root: str | os.PathLike,
    spatial_dims: int,
    spatial_size: Sequence[int],
    quantile: float = 0.05,
) -> dict[str, dict[str, object]]:
    """:func:`audit_center` for every center style in a synthetic dataset (written by ``configs/inference.json``),
    against that center's real training images under ``data_root`` (real-to-real distances between subjects, from
    the center's ``dataset.json``). Images are compared scaled to [0, 1]."""
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
        out[c] = audit_center(
            images[rows],
            real,
            quantile,
            [os.path.basename(n) for n in real_names],
            [os.path.basename(names[i]) for i in rows],
            source_pairs(center_dir, [sources[i] for i in rows]),
            center_subjects(center_dir),
        )
    return out


def memorisation_gap(
    generator: torch.nn.Module,
    code: int,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    batch_size: int = 16,
) -> dict[str, dict[str, float]]:
    """How much better the generator rebuilds its training pairs than held-out pairs of the same center.

    Image quality of G(label, code) against the paired real image (:func:`~scripts.evaluation.image_quality.
    image_metrics`: SSIM, PSNR in dB and MAE, computed on [0, 1]) on the center's training pairs and on its held-out
    test pairs. A generator that generalises scores about the same on both; one that memorises scores far better on
    the training pairs.

    Args:
        generator: the generator (``condition`` + ``forward``, as :class:`~scripts.networks.TDGANGenerator`).
        code: the center's code.
        train_images: the center's training images (N, C, *spatial) in [-1, 1].
        train_labels: their label maps (N, 1, *spatial).
        test_images: the center's held-out images (M, C, *spatial) in [-1, 1].
        test_labels: their label maps (M, 1, *spatial).
        batch_size: generator batch size.

    Returns:
        ``{"train": {metric: value}, "test": {...}, "gap": {metric: train - test}}`` for ``ssim``, ``psnr`` and
        ``mae`` (rounded to one decimal more than the report's image-quality tables); a memorising generator has
        a positive SSIM and PSNR gap and a negative MAE gap (lower is better).
        PSNR is ``inf`` where G reproduces every image exactly.
    """
    quality = {}
    for split, images, labels in (("train", train_images, train_labels), ("test", test_images, test_labels)):
        if images.shape[0] == 0 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"memorisation_gap: {split} pairs need as many images as label maps (at least 1), got "
                f"{images.shape[0]} images and {labels.shape[0]} label maps."
            )
        fake = generate_images(generator, labels, torch.full((labels.shape[0],), int(code)), batch_size)
        quality[split] = image_metrics(fake, images)
    gap = {m: quality["train"][m] - quality["test"][m] for m in quality["train"]}
    return {
        split: {m: round(v, DECIMALS[m] + 1) for m, v in q.items()} for split, q in (*quality.items(), ("gap", gap))
    }


def handoff_reconstruction(
    generator: torch.nn.Module,
    label_bank: Mapping[str, torch.Tensor],
    codes: Mapping[str, int],
    real_images: Mapping[str, torch.Tensor],
    real_labels: Mapping[str, torch.Tensor] | None = None,
    quantile: float = 0.05,
    batch_size: int = 16,
    real_subjects: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """What a hand-off lets its holder rebuild: its generator run on every label map of its bank, under the map's own
    center's code, audited against that center's real training images with :func:`audit_center`.

    Args:
        generator: the hand-off's generator.
        label_bank: the hand-off's label bank, center name -> uint8 maps (N, 1, *spatial) (or (N, *spatial)).
        codes: the hand-off's registry, center name -> code.
        real_images: center name -> the center's real training images (M, C, *spatial) in [-1, 1], for every banked
            center.
        real_labels: optional center name -> the training label maps in the same order as ``real_images``; a bank
            map equal to one of them is then paired with that patient, and the audit says how many near copies are
            of the very patient whose map was carried.
        quantile: the near-copy threshold of :func:`audit_center`.
        batch_size: generator batch size.
        real_subjects: optional center name -> the subject of each of its real images (:func:`audit_center`).

    Returns:
        ``{"carries_label_maps": bool, "label_maps": int, "near_copies": int | None, "near_copy_rate": float | None,
        "centers": {name: audit_center result}, "summary": str}``. With an empty bank (``local`` reminding) the
        counts are None and the summary says the hand-off carries no label maps, so nothing can be rebuilt from it
        (an absence of input, not a measured rate of 0).

    Raises:
        ValueError: a banked center missing from ``codes`` or ``real_images``.
    """
    banked = {name: maps for name, maps in label_bank.items() if maps is not None and len(maps) > 0}
    if not banked:
        return {
            "carries_label_maps": False,
            "label_maps": 0,
            "near_copies": None,
            "near_copy_rate": None,
            "centers": {},
            "summary": "the hand-off carries no label maps (local reminding): its holder has no label map of any "
            "patient to run the generator on, so no training image can be rebuilt from it this way.",
        }
    missing = sorted(n for n in banked if n not in codes or n not in real_images)
    if missing:
        raise ValueError(
            f"handoff_reconstruction: banked centers {missing} need a registry code and their real training images; "
            f"codes given for {sorted(codes)}, images for {sorted(real_images)}."
        )
    centers: dict[str, Any] = {}
    for name, maps in banked.items():
        real = real_images[name]
        maps = torch.as_tensor(maps).as_subclass(torch.Tensor)
        if maps.ndim == real.ndim - 1:
            maps = maps.unsqueeze(1)
        fake = generate_images(generator, maps.long(), torch.full((maps.shape[0],), int(codes[name])), batch_size)
        paired = None
        if real_labels is not None and name in real_labels:
            known = real_labels[name].flatten(1)
            paired = [_row_index(known, m.flatten()) for m in maps]
        # on [0, 1], the scale audit_dataset compares synthetic datasets on
        subjects = None if real_subjects is None else real_subjects.get(name)
        centers[name] = audit_center(
            (fake.clamp(-1, 1) + 1) / 2, (real.clamp(-1, 1) + 1) / 2, quantile, paired=paired, real_subjects=subjects
        )
    total = sum(int(a["synthetic"]) for a in centers.values())
    flagged = sum(int(a["flagged"]) for a in centers.values())
    return {
        "carries_label_maps": True,
        "label_maps": total,
        "near_copies": flagged,
        "near_copy_rate": round(flagged / total, 4),
        "centers": centers,
        "summary": f"the hand-off carries {total} label maps of {len(centers)} centers; its generator turns "
        f"{flagged} of them ({100 * flagged / total:.1f} %) into near copies of a real training image.",
    }


def _row_index(rows: torch.Tensor, row: torch.Tensor) -> int | None:
    """Index of the first row of ``rows`` equal to ``row``, or None."""
    hits = (rows == row.to(rows.dtype)).all(dim=1).nonzero().flatten()
    return int(hits[0]) if len(hits) else None
