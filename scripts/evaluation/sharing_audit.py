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
"""Audit before sharing (``configs/audit.json``): a synthetic set against the site's own training images, with the
evaluation's near-copy audit, a picture of the nearest pairs and a pass/fail verdict against a threshold."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scripts.data.centers import center_subjects
from scripts.data.checks import InputError
from scripts.evaluation.image_quality import load_pairs
from scripts.evaluation.memorisation import audit_center, source_pairs
from scripts.files import atomic_write, inside, private_dirs

__all__ = ["EXIT_NEAR_COPIES", "VERDICT_FILE", "PAIRS_FILE", "audit_before_sharing", "gate"]

EXIT_NEAR_COPIES = 3
"""Exit status of ``configs/audit.json`` when the near-copy rate is above the threshold (a refusal of the inputs
exits 1)."""
VERDICT_FILE = "audit.json"
PAIRS_FILE = "nearest_pairs.png"

logger = logging.getLogger("audit")


def audit_before_sharing(
    synthetic_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    max_near_copy_rate: float = 0.1,
    quantile: float = 0.05,
    spatial_dims: int = 2,
    spatial_size: Sequence[int] | None = None,
    pairs_shown: int = 8,
) -> dict[str, Any]:
    """Audit every synthetic image of ``synthetic_dir`` against the real training images of ``dataset_dir``.

    The audit is the evaluation's (:func:`~scripts.evaluation.memorisation.audit_center`, as the protocol's leakage
    step runs it): images on [0, 1]; a synthetic image is a near copy when its nearest real training image is closer
    (RMS distance) than the ``quantile`` of the distances from each real training image to its nearest image of
    another subject. Every synthetic image counts, whatever center style it was drawn in: any of them may copy this
    site's patients. Writes, owner-only, ``output_dir/audit.json`` (the verdict, the rate, the audit's numbers and the
    nearest pairs) and ``output_dir/nearest_pairs.png`` (the closest pairs, synthetic beside real). Both show the
    site's real images or their file names: they stay at the site.

    Args:
        synthetic_dir: the synthetic MSD-style folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``), as
            ``configs/inference.json`` writes it; its ``training`` list is audited.
        dataset_dir: the site's own center folder (``dataset.json``; its ``training`` images, at least 2, with
            their ``subject`` where several slices come from one patient).
        output_dir: where the verdict and the picture go; not inside ``synthetic_dir`` (that folder is what leaves).
        max_near_copy_rate: the largest share of near copies that passes, in [0, 1].
        quantile: the real-to-real quantile that defines a near copy, in (0, 1).
        spatial_dims: 2 or 3.
        spatial_size: the size both sets are compared at; None: the synthetic images' own size.
        pairs_shown: how many of the closest pairs the picture shows (at least 1).

    Returns:
        the verdict written to ``audit.json``: ``verdict`` ("pass" or "fail"), ``near_copy_rate``, ``near_copies``,
        ``synthetic``, ``max_near_copy_rate``, ``quantile``, the inputs, ``audit`` (the audit's full result with
        ``nearest_pairs``) and ``summary`` (one line).

    Raises:
        InputError: a setting out of range, a missing ``dataset.json``, or ``output_dir`` inside ``synthetic_dir``.
    """
    synthetic_dir, dataset_dir, output_dir = Path(synthetic_dir), Path(dataset_dir), Path(output_dir)
    _check_inputs(synthetic_dir, dataset_dir, output_dir, max_near_copy_rate, quantile, spatial_dims, pairs_shown)
    size = None if spatial_size is None else [int(s) for s in spatial_size]
    synthetic, _, names = load_pairs(synthetic_dir, spatial_dims, size, key="training", minv=0.0)
    size = size or list(synthetic.shape[2:])
    real, _, real_names = load_pairs(dataset_dir, spatial_dims, size, key="training", minv=0.0)
    if real.shape[1] != synthetic.shape[1]:
        raise InputError(
            f"{synthetic_dir} has {synthetic.shape[1]}-channel images and {dataset_dir} {real.shape[1]}-channel "
            "ones; expected the same modality (audit the synthetic set against the center it was made for)."
        )
    meta = json.loads((synthetic_dir / "dataset.json").read_text())
    sources = [item.get("label_source") if isinstance(item, dict) else None for item in meta["training"]]
    result = audit_center(
        synthetic,
        real,
        quantile,
        real_names=[os.path.basename(n) for n in real_names],
        synthetic_names=[os.path.basename(n) for n in names],
        paired=source_pairs(dataset_dir, sources),
        real_subjects=center_subjects(dataset_dir),
        nearest=pairs_shown,
    )
    rate = float(result["flagged_fraction"])
    passed = rate <= max_near_copy_rate
    summary = (
        f"{result['flagged']} of {result['synthetic']} synthetic images ({100 * rate:.1f} %) are near copies of "
        f"{dataset_dir.name}'s training images; threshold {100 * max_near_copy_rate:.1f} %: "
        + ("pass" if passed else "FAIL, do not share this set")
    )
    verdict = {
        "verdict": "pass" if passed else "fail",
        "near_copy_rate": rate,
        "near_copies": result["flagged"],
        "synthetic": result["synthetic"],
        "max_near_copy_rate": max_near_copy_rate,
        "quantile": quantile,
        "synthetic_dir": str(synthetic_dir),
        "dataset_dir": str(dataset_dir),
        "declared_shareable": meta.get("shareable"),
        "spatial_size": size,
        "nearest_pairs_figure": PAIRS_FILE,
        "audit": result,
        "summary": summary,
    }
    private_dirs(output_dir)
    atomic_write(output_dir / PAIRS_FILE, lambda f: _plot_pairs(f, synthetic, real, result, verdict))
    atomic_write(output_dir / VERDICT_FILE, lambda f: f.write((json.dumps(verdict, indent=4) + "\n").encode()))
    logger.info(f"audit before sharing: {summary} ({output_dir / VERDICT_FILE})")
    return verdict


def gate(verdict: dict[str, Any]) -> None:
    """End the command with :data:`EXIT_NEAR_COPIES` and the verdict's one line when the audit failed, so that a
    site's script can stop the set from leaving.

    Raises:
        SystemExit: the verdict is "fail".
    """
    if verdict["verdict"] != "pass":
        print(f"error: {verdict['summary']}", file=sys.stderr)
        raise SystemExit(EXIT_NEAR_COPIES)


def _check_inputs(
    synthetic_dir: Path,
    dataset_dir: Path,
    output_dir: Path,
    max_near_copy_rate: float,
    quantile: float,
    spatial_dims: int,
    pairs_shown: int,
) -> None:
    problems = []
    for what, folder in (("synthetic_dir", synthetic_dir), ("dataset_dir", dataset_dir)):
        if not (folder / "dataset.json").is_file():
            problems.append(f"{what} {folder}: no dataset.json; expected an MSD-style folder")
    if not 0 <= max_near_copy_rate <= 1:
        problems.append(f"max_near_copy_rate must be in [0, 1], got {max_near_copy_rate}")
    if not 0 < quantile < 1:
        problems.append(f"quantile must be in (0, 1), got {quantile}")
    if spatial_dims not in (2, 3):
        problems.append(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if int(pairs_shown) < 1:
        problems.append(f"pairs_shown must be at least 1, got {pairs_shown}")
    if inside(output_dir, synthetic_dir):
        problems.append(
            f"output_dir {output_dir} is inside synthetic_dir {synthetic_dir}: the audit shows the site's real "
            "images and would leave with the set; choose a folder outside it"
        )
    if problems:
        raise InputError("audit before sharing: " + "; ".join(problems) + ".")


def _display(image: torch.Tensor) -> np.ndarray:
    """One image (C, *spatial) on [0, 1] as a 2D array to show: grey (the first channel) or RGB (3 channels); the
    middle slice of the last axis of a 3D image."""
    img = image.float().numpy()
    if img.ndim == 4:
        img = img[..., img.shape[-1] // 2]
    return np.moveaxis(img, 0, -1) if img.shape[0] == 3 else img[0]


def _plot_pairs(
    path: str, synthetic: torch.Tensor, real: torch.Tensor, result: dict[str, Any], verdict: dict[str, Any]
) -> None:
    """The closest pairs, one row each (synthetic | its nearest real training image), closest first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = result["nearest_pairs"]
    height = 2.0 * len(pairs) + 0.8
    fig, axes = plt.subplots(len(pairs), 2, figsize=(4.2, height), squeeze=False)
    for row, pair in zip(axes, pairs):
        for ax, img, name in (
            (row[0], synthetic[pair["synthetic_index"]], f"synthetic {pair['synthetic']}"),
            (row[1], real[pair["real_index"]], f"real {pair['nearest_real']}"),
        ):
            ax.imshow(_display(img), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(name[:40], fontsize=6)
        mark = "NEAR COPY, " if pair["near_copy"] else ""
        row[0].set_ylabel(f"{mark}d = {pair['distance']:.4f}", fontsize=7, color="red" if pair["near_copy"] else "k")
    fig.suptitle(
        f"{verdict['verdict'].upper()}: {verdict['near_copies']} of {verdict['synthetic']} near copies "
        f"(rate {verdict['near_copy_rate']:.3f}, max {verdict['max_near_copy_rate']:.3f});\n"
        f"near copy: d < {result['threshold']:.4f} (real-to-real {verdict['quantile']:.0%} quantile)",
        fontsize=7,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / height))  # room for the two-line title
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
