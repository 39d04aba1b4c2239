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
"""BraTS cases (3D NIfTI per modality + segmentation) to per-center MSD folders of 2D axial slices, as in the paper."""

from __future__ import annotations

import argparse
import csv
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from scripts.data.checks import InputError, raise_if_problems
from scripts.data.writer import CentersWriter, seeded_split

__all__ = [
    "MODALITIES",
    "LABELS",
    "find_cases",
    "read_centers_table",
    "slice_indices",
    "normalise_slice",
    "label_slice",
    "prepare_brats",
    "main",
]

logger = logging.getLogger(__name__)

MODALITIES = ("t1", "t1ce", "t2", "flair")
BRATS_LABELS = {0, 1, 2, 4}  # 1 necrotic / non-enhancing core, 2 edema, 4 enhancing tumour
LABELS = {
    "whole": {"0": "background", "1": "brain", "2": "tumour"},
    "subregions": {
        "0": "background",
        "1": "brain",
        "2": "necrotic and non-enhancing tumour core",
        "3": "edema",
        "4": "enhancing tumour",
    },
}
"""The classes of the prepared label maps: the brain region plus the whole tumour, or its three sub-regions."""


def find_cases(input_dir: str | os.PathLike) -> dict[str, Path]:
    """Every BraTS case under ``input_dir`` (any depth): case id -> folder, from the ``<case>_seg.nii[.gz]`` files."""
    cases = {}
    for seg in sorted(Path(input_dir).rglob("*_seg.nii*")):
        if re.search(r"_seg\.nii(\.gz)?$", seg.name):
            cases[re.sub(r"_seg\.nii(\.gz)?$", "", seg.name)] = seg.parent
    return cases


def _case_file(folder: Path, case: str, suffix: str) -> Path:
    """``<folder>/<case>_<suffix>.nii.gz``, or the uncompressed ``.nii`` when only that exists."""
    path = folder / f"{case}_{suffix}.nii.gz"
    return (
        path if path.is_file() or not (folder / f"{case}_{suffix}.nii").is_file() else folder / f"{case}_{suffix}.nii"
    )


def read_centers_table(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, str]]:
    """A case-to-center table: CSV with a header holding ``case`` and ``center`` (and optionally ``split``:
    ``training``/``test``).

    Returns:
        (case -> center in the table's order, case -> split for the rows that give one).

    Raises:
        InputError: unreadable file, missing columns, empty or repeated cases, unknown split values.
    """
    path = Path(path)
    if not path.is_file():
        raise_if_problems([f"{path}: not found; expected a CSV with columns case,center."], "the centers table")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = set(rows[0]) if rows else set()
    if not {"case", "center"} <= columns:
        raise_if_problems(
            [f"{path}: columns {sorted(columns)}; expected a header with 'case' and 'center' (and optional 'split')."],
            "the centers table",
        )
    centers: dict[str, str] = {}
    splits: dict[str, str] = {}
    problems = []
    for n, row in enumerate(rows, start=2):
        case, center, split = row["case"].strip(), row["center"].strip(), (row.get("split") or "").strip()
        if not case or not center:
            problems.append(f"{path}: line {n} has an empty case or center; expected both.")
        elif case in centers:
            problems.append(f"{path}: line {n}: case {case!r} is listed again; expected each case once.")
        else:
            centers[case] = center
        if split and split not in ("training", "test"):
            problems.append(f"{path}: line {n}: split {split!r}; expected 'training' or 'test'.")
        elif split:
            splits[case] = split
    raise_if_problems(problems, "the centers table")
    return centers, splits


def slice_indices(tumour_pixels: np.ndarray, window: int = 20, min_tumour_pixels: int = 10) -> list[int]:
    """The slices kept from one case.

    Args:
        tumour_pixels: tumour pixels per slice along the slicing axis.
        window: keep slices within ``window`` of the centre of the tumour's extent along the axis.
        min_tumour_pixels: drop slices with fewer tumour pixels.

    Returns:
        the kept slice indices, ascending (none when the case has no tumour).
    """
    with_tumour = np.flatnonzero(tumour_pixels > 0)
    if not len(with_tumour):
        return []
    centre = (int(with_tumour[0]) + int(with_tumour[-1])) // 2
    lo, hi = max(centre - window, 0), min(centre + window, len(tumour_pixels) - 1)
    return [z for z in range(lo, hi + 1) if tumour_pixels[z] >= min_tumour_pixels]


def normalise_slice(image: np.ndarray) -> np.ndarray:
    """Per-slice intensity normalisation: the brain (non-zero pixels) divided by its 99.5th percentile, clipped to
    [0, 1]; the background stays 0."""
    image = np.asarray(image, dtype=np.float32)
    brain = image > 0
    if not brain.any():
        return np.zeros_like(image)
    top = float(np.percentile(image[brain], 99.5))
    return np.where(brain, np.clip(image / max(top, 1e-6), 0.0, 1.0), 0.0).astype(np.float32)


def label_slice(image: np.ndarray, seg: np.ndarray, tumour: str = "whole") -> np.ndarray:
    """The label map of one slice: 0 background, 1 brain (non-zero image), then the tumour classes.

    Args:
        image: the slice of the chosen modality (skull-stripped: zero outside the brain).
        seg: the BraTS segmentation slice (0, 1 core, 2 edema, 4 enhancing).
        tumour: ``"whole"`` (2 = any tumour) or ``"subregions"`` (2 core, 3 edema, 4 enhancing).

    Returns:
        a uint8 class map.
    """
    label = np.where(np.asarray(image) > 0, 1, 0).astype(np.uint8)
    seg = np.asarray(seg)
    if tumour == "whole":
        label[seg > 0] = 2
    elif tumour == "subregions":
        for brats, ours in ((1, 2), (2, 3), (4, 4)):
            label[seg == brats] = ours
    else:
        raise ValueError(f"tumour must be 'whole' or 'subregions', got {tumour!r}.")
    return label


def _read(path: Path, problems: list[str]) -> np.ndarray | None:
    """A volume's voxels, or None with a problem line."""
    if not path.is_file():
        problems.append(f"{path}: not found; expected this file of the case beside its _seg file.")
        return None
    try:
        return np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as e:  # noqa: BLE001 - any reader failure means the same thing to the user
        problems.append(f"{path}: unreadable NIfTI ({type(e).__name__}: {str(e)[:200]}).")
        return None


def _assign_centers(
    cases: Sequence[str], table: str | None, num_centers: int, seed: int, input_dir: Path
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Center -> its cases (in visiting order of the centers), and case -> split where the table fixes it."""
    if table:
        centers, splits = read_centers_table(table)
        missing = [c for c in centers if c not in cases]
        raise_if_problems(
            [
                f"{table}: case {c!r} has no {c}_seg.nii.gz under {input_dir}; expected every listed case."
                for c in missing
            ],
            "the centers table",
        )
        skipped = [c for c in cases if c not in centers]
        if skipped:
            logger.warning(f"{len(skipped)} case(s) under {input_dir} are not in {table} and are left out.")
        groups: dict[str, list[str]] = {}
        for case, center in centers.items():
            groups.setdefault(center, []).append(case)
        return groups, splits
    if not 1 <= num_centers <= len(cases):
        raise ValueError(f"num_centers must be in 1..{len(cases)} (the number of cases), got {num_centers}.")
    order = np.random.default_rng(seed).permutation(len(cases))
    parts = np.array_split(order, num_centers)
    return {f"center_{i + 1}": [cases[int(j)] for j in sorted(part)] for i, part in enumerate(parts)}, {}


def prepare_brats(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    modality: str = "t2",
    tumour: str = "whole",
    centers_table: str | None = None,
    num_centers: int = 3,
    test_fraction: float = 0.2,
    seed: int = 0,
    window: int = 20,
    min_tumour_pixels: int = 10,
) -> Path:
    """Turn a BraTS folder into per-center MSD folders of 2D axial slices plus ``centers.json``.

    Per case: the chosen modality's axial slices within ``window`` of the centre of the tumour's extent, without those
    with fewer than ``min_tumour_pixels`` tumour pixels; each slice normalised by :func:`normalise_slice` and labelled
    by :func:`label_slice`. Centers come from ``centers_table`` (e.g. the institutions) or from a seeded split into
    ``num_centers``; the test split is drawn by case (never by slice), ``test_fraction`` of each center's cases,
    unless the table fixes it. Every case is checked before the output appears; any problem leaves no output.

    Args:
        input_dir: the BraTS folder (cases at any depth, each ``<case>_{t1,t1ce,t2,flair,seg}.nii.gz``).
        output_dir: the data root to create (must not exist, or be empty).
        modality: one of :data:`MODALITIES`.
        tumour: ``"whole"`` or ``"subregions"`` (see :data:`LABELS`).
        centers_table: optional CSV ``case,center[,split]``; otherwise a seeded split.
        num_centers: centers of the seeded split.
        test_fraction: fraction of each center's cases held out for testing (seeded).
        seed: seed of the splits.
        window: half width of the slice window around the tumour's centre.
        min_tumour_pixels: slices with fewer tumour pixels are dropped.

    Returns:
        ``output_dir``.

    Raises:
        InputError: one line per problem with the input files (missing, unreadable, shapes, label values, NaN/Inf).
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}.")
    if tumour not in LABELS:
        raise ValueError(f"tumour must be one of {sorted(LABELS)}, got {tumour!r}.")
    input_dir = Path(input_dir)
    found = find_cases(input_dir)
    raise_if_problems(
        [] if found else [f"{input_dir}: no <case>_seg.nii.gz found at any depth; expected a BraTS training folder."],
        "the BraTS input",
    )
    groups, fixed_splits = _assign_centers(list(found), centers_table, num_centers, seed, input_dir)
    record: dict[str, Any] = {
        "source": str(input_dir.absolute()),
        "modality": modality,
        "tumour": tumour,
        "centers_table": centers_table,
        "seed": seed,
        "test_fraction": test_fraction,
        "window": window,
        "min_tumour_pixels": min_tumour_pixels,
        "centers": {},
    }
    problems: list[str] = []
    description = f"BraTS {modality} axial slices, prepared by scripts/data/prepare_brats.py ({tumour} tumour labels)."
    with CentersWriter(output_dir, LABELS[tumour], {"0": modality.upper()}, description) as writer:
        for center, cases in groups.items():
            training, test = seeded_split(cases, test_fraction, seed)
            if fixed_splits:
                training = [c for c in cases if fixed_splits.get(c, "training") == "training"]
                test = [c for c in cases if fixed_splits.get(c) == "test"]
            record["centers"][center] = {"training": training, "test": test, "slices": {"training": 0, "test": 0}}
            for split, split_cases in (("training", training), ("test", test)):
                for case in split_cases:
                    args = (writer, found[case], case, center, split, modality, tumour, window, min_tumour_pixels)
                    count = _write_case(*args, problems)
                    record["centers"][center]["slices"][split] += count
        raise_if_problems(problems, f"the BraTS input {input_dir}")
        out = writer.commit(list(groups), record)
    for center, info in record["centers"].items():
        logger.info(
            f"{center}: {len(info['training'])} training case(s) ({info['slices']['training']} slices), "
            f"{len(info['test'])} test case(s) ({info['slices']['test']} slices)."
        )
    return out


def _write_case(
    writer: CentersWriter,
    folder: Path,
    case: str,
    center: str,
    split: str,
    modality: str,
    tumour: str,
    window: int,
    min_tumour_pixels: int,
    problems: list[str],
) -> int:
    """Check one case and write its kept slices; returns how many (0 with a problem line when it is unusable)."""
    image_path, seg_path = _case_file(folder, case, modality), _case_file(folder, case, "seg")
    image, seg = _read(image_path, problems), _read(seg_path, problems)
    if image is None or seg is None:
        return 0
    if image.ndim != 3 or image.shape != seg.shape:
        what = f"shape {seg.shape} differs from {image_path.name}'s {image.shape}"
        problems.append(f"{seg_path}: {what}; expected two 3D volumes of the same shape.")
        return 0
    values = {int(v) for v in np.unique(seg)}
    if not values <= BRATS_LABELS or np.any(seg != np.round(seg)):
        what = f"label values {sorted(values - BRATS_LABELS)} are not BraTS labels"
        problems.append(f"{seg_path}: {what}; expected values in {sorted(BRATS_LABELS)}.")
        return 0
    image = np.asarray(image, dtype=np.float32)
    if not np.all(np.isfinite(image)):
        problems.append(
            f"{image_path}: {int(np.sum(~np.isfinite(image)))} NaN/Inf intensities; expected finite values."
        )
        return 0
    kept = slice_indices(np.sum(seg > 0, axis=(0, 1)), window, min_tumour_pixels)
    if not kept:
        logger.warning(f"{seg_path}: no slice with at least {min_tumour_pixels} tumour pixels; the case adds none.")
    for z in kept:
        label = label_slice(image[..., z], seg[..., z], tumour)
        writer.add(center, split, f"{case}_z{z:03d}", normalise_slice(image[..., z]), label, subject=case)
    return len(kept)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line; see ``python -m scripts.data.prepare_brats --help``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input_dir", required=True, help="BraTS folder: <case>_{t1,t1ce,t2,flair,seg}.nii.gz")
    parser.add_argument("--output_dir", required=True, help="data root to create (center folders + centers.json)")
    parser.add_argument("--modality", default="t2", choices=MODALITIES)
    parser.add_argument("--tumour", default="whole", choices=sorted(LABELS), help="tumour classes of the labels")
    parser.add_argument("--centers_table", default=None, help="CSV case,center[,split]; default: a seeded split")
    parser.add_argument("--num_centers", type=int, default=3, help="centers of the seeded split")
    parser.add_argument("--test_fraction", type=float, default=0.2, help="test cases per center (by case)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window", type=int, default=20, help="slices within +-window of the tumour's centre")
    parser.add_argument("--min_tumour_pixels", type=int, default=10, help="drop slices with fewer tumour pixels")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = prepare_brats(**vars(args))
    except (InputError, FileExistsError, ValueError) as error:  # the user's input: the message, no traceback
        parser.exit(1, f"{parser.prog}: {error}\n")
    print(f"prepared {out} ({len(LABELS[args.tumour])} classes, declared in dataset.json: every workflow reads them).")


if __name__ == "__main__":
    main()
