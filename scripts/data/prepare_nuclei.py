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
"""MoNuSeg/Kumar-style nuclei data (H&E .tif + .xml polygons) to per-organ MSD folders of RGB patches with labels."""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scripts.data.checks import InputError, raise_if_problems
from scripts.data.writer import CentersWriter, seeded_split

__all__ = [
    "LABELS",
    "read_polygons",
    "rasterise_instances",
    "instance_labels",
    "patch_starts",
    "prepare_nuclei",
    "main",
]

logger = logging.getLogger(__name__)

LABELS = {"0": "background", "1": "nucleus interior", "2": "nucleus contour"}
MODALITY = {"0": "H&E (red)", "1": "H&E (green)", "2": "H&E (blue)"}
"""One ``modality`` entry per image channel, as the Medical Segmentation Decathlon declares channels: workflows read
``image_channels`` = 3 from it."""
IMAGE_SUFFIXES = (".tif", ".tiff")


def read_polygons(xml_path: str | os.PathLike) -> list[np.ndarray]:
    """The nucleus polygons of a MoNuSeg-style annotation: every ``Region``'s ``Vertex`` (X, Y) list, in pixels.

    Raises:
        ValueError: the file is not XML, or holds no region with at least three vertices.
    """
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{xml_path}: not readable XML ({e}); expected MoNuSeg-style <Region><Vertices>.") from e
    polygons = []
    for region in root.iter("Region"):
        points = [(float(v.get("X", "nan")), float(v.get("Y", "nan"))) for v in region.iter("Vertex")]
        if len(points) >= 3 and np.all(np.isfinite(points)):
            polygons.append(np.asarray(points, dtype=np.float64))
    if not polygons:
        raise ValueError(f"{xml_path}: no <Region> with at least 3 <Vertex X= Y=>; expected nucleus polygons.")
    return polygons


def rasterise_instances(polygons: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """An instance map (0 background, ``i + 1`` for polygon ``i``; later polygons win overlaps) of ``shape`` (H, W).

    A pixel (row r, column c) is inside a polygon when its centre (X = c, Y = r) is, by the even-odd rule.
    """
    instances = np.zeros(shape, dtype=np.int32)
    for index, poly in enumerate(polygons, start=1):
        c0, r0 = np.floor(poly.min(axis=0)).astype(int)
        c1, r1 = np.ceil(poly.max(axis=0)).astype(int)
        c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, shape[1] - 1), min(r1, shape[0] - 1)
        if c0 > c1 or r0 > r1:
            continue
        ys, xs = np.mgrid[r0 : r1 + 1, c0 : c1 + 1].astype(np.float64)
        inside = np.zeros(ys.shape, dtype=bool)
        for (x1, y1), (x2, y2) in zip(poly, np.roll(poly, -1, axis=0), strict=True):
            if y1 == y2:
                continue
            crosses = (y1 > ys) != (y2 > ys)
            inside ^= crosses & (xs < x1 + (ys - y1) * (x2 - x1) / (y2 - y1))
        instances[r0 : r1 + 1, c0 : c1 + 1][inside] = index
    return instances


def instance_labels(instances: np.ndarray, contour_width: int = 2) -> np.ndarray:
    """Three-class label map of an instance map: 0 background, 1 nucleus interior, 2 nucleus contour (the outer
    ``contour_width`` pixels of every nucleus, also where two nuclei touch)."""
    label = (instances > 0).astype(np.uint8)
    remaining = instances.copy()
    for _ in range(contour_width):
        pad = np.pad(remaining, 1, mode="edge")
        differs = (
            (pad[:-2, 1:-1] != remaining)
            | (pad[2:, 1:-1] != remaining)
            | (pad[1:-1, :-2] != remaining)
            | (pad[1:-1, 2:] != remaining)
        )
        edge = (remaining > 0) & differs
        label[edge] = 2
        remaining = np.where(edge, 0, remaining)
    return label


def patch_starts(length: int, patch: int) -> list[int]:
    """Start offsets of the fewest ``patch``-long windows covering ``length`` (evenly spread, the last one flush)."""
    if length < patch:
        return []
    count = math.ceil(length / patch)
    return sorted({int(round(s)) for s in np.linspace(0, length - patch, count)})


def _read_table(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """image stem -> organ, and image stem -> split where given, from a CSV ``image,organ[,split]``."""
    if not path.is_file():
        raise_if_problems([f"{path}: not found; expected a CSV with columns image,organ."], "the organ table")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"image", "organ"} <= set(rows[0]):
        columns = sorted(rows[0]) if rows else []
        raise_if_problems(
            [f"{path}: columns {columns}; expected a header with 'image' and 'organ'."], "the organ table"
        )
    organs, splits, problems = {}, {}, []
    for n, row in enumerate(rows, start=2):
        stem, organ, split = Path(row["image"].strip()).stem, row["organ"].strip(), (row.get("split") or "").strip()
        if not stem or not organ or stem in organs:
            problems.append(
                f"{path}: line {n}: empty or repeated image/organ; expected each image once with its organ."
            )
            continue
        if split not in ("", "training", "test"):
            problems.append(f"{path}: line {n}: split {split!r}; expected 'training' or 'test'.")
        organs[stem] = organ
        if split:
            splits[stem] = split
    raise_if_problems(problems, "the organ table")
    return organs, splits


def _read_rgb(path: Path, problems: list[str]) -> np.ndarray | None:
    """An H&E image as uint8 (H, W, 3) (an alpha channel is dropped), or None with a problem line."""
    import itk

    try:
        array = np.asarray(itk.array_from_image(itk.imread(str(path))))
    except Exception as e:  # noqa: BLE001 - any reader failure means the same thing to the user
        problems.append(f"{path}: unreadable image ({type(e).__name__}: {str(e).strip()[:200]}).")
        return None
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        problems.append(f"{path}: image of shape {array.shape}; expected an RGB H&E image (H, W, 3).")
        return None
    if array.dtype != np.uint8:
        problems.append(f"{path}: {array.dtype} pixels; expected 8-bit RGB.")
        return None
    return array[..., :3]


def prepare_nuclei(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    organ_table: str | None = None,
    organ_from_folder: bool = False,
    patch_size: int = 256,
    contour_width: int = 2,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Path:
    """Turn a nuclei folder into one center per organ of ``patch_size``² RGB patches with 3-class label maps.

    Every ``.tif`` under ``input_dir`` needs a ``<same stem>.xml`` (MoNuSeg layout: ``Tissue Images/`` and
    ``Annotations/``); its polygons become :func:`instance_labels`. Images are cut into the fewest patches covering
    them (:func:`patch_starts`). The organ of each image comes from ``organ_table`` (CSV ``image,organ[,split]``) or,
    with ``organ_from_folder``, from the image's folder name; centers follow the table's order, or the sorted folder
    names. The test split is drawn by image (never by patch), ``test_fraction`` per organ, unless the table fixes
    it. Any problem leaves no output.

    Args:
        input_dir: the folder of ``.tif`` images and ``.xml`` annotations (any depth).
        output_dir: the data root to create (must not exist, or be empty).
        organ_table: CSV ``image,organ[,split]`` (``image``: file name or stem); images not listed are left out.
        organ_from_folder: take each image's organ from its parent folder's name instead.
        patch_size: side of the square patches.
        contour_width: contour thickness in pixels.
        test_fraction: fraction of each organ's images held out for testing (seeded).
        seed: seed of the split.

    Returns:
        ``output_dir``.

    Raises:
        InputError: one line per problem (missing or unreadable annotation or image, non-RGB image, too small image).
    """
    if (organ_table is None) == (not organ_from_folder):
        raise ValueError("give exactly one of organ_table and organ_from_folder.")
    input_dir = Path(input_dir)
    images = sorted(p for p in input_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    annotations: dict[str, list[Path]] = {}
    for p in input_dir.rglob("*.xml"):
        annotations.setdefault(p.stem, []).append(p)
    problems = [] if images else [f"{input_dir}: no .tif image at any depth; expected H&E .tif images with .xml."]
    if organ_table:
        organs, fixed = _read_table(Path(organ_table))
        stems = {p.stem for p in images}
        absent = [s for s in organs if s not in stems]
        problems += [
            f"{organ_table}: image {s!r} is not under {input_dir}; expected every listed image." for s in absent
        ]
        images = [p for p in images if p.stem in organs]
    else:
        organs, fixed = {p.stem: p.parent.name for p in images}, {}
    raise_if_problems(problems, f"the nuclei input {input_dir}")
    groups: dict[str, list[Path]] = {organ: [] for organ in organs.values()} if organ_table else {}  # table order
    for path in images:
        groups.setdefault(organs[path.stem], []).append(path)
    record: dict[str, Any] = {
        "source": str(input_dir.absolute()),
        "organ_table": organ_table,
        "patch_size": patch_size,
        "contour_width": contour_width,
        "test_fraction": test_fraction,
        "seed": seed,
        "centers": {},
    }
    description = f"H&E nuclei patches ({patch_size}x{patch_size}), prepared by scripts/data/prepare_nuclei.py."
    with CentersWriter(output_dir, LABELS, MODALITY, description) as writer:
        for organ, paths in groups.items():
            training, test = seeded_split([p.stem for p in paths], test_fraction, seed)
            if fixed:
                training = [p.stem for p in paths if fixed.get(p.stem, "training") == "training"]
                test = [p.stem for p in paths if fixed.get(p.stem) == "test"]
            record["centers"][organ] = {"training": training, "test": test, "patches": {"training": 0, "test": 0}}
            for path in paths:
                split = "test" if path.stem in test else "training"
                xml = annotations.get(path.stem, [])
                count = _write_image(writer, path, xml, organ, split, patch_size, contour_width, problems)
                record["centers"][organ]["patches"][split] += count
        raise_if_problems(problems, f"the nuclei input {input_dir}")
        out = writer.commit(list(groups), record)
    for organ, info in record["centers"].items():
        logger.info(f"{organ}: {info['patches']['training']} training and {info['patches']['test']} test patches.")
    return out


def _write_image(
    writer: CentersWriter,
    path: Path,
    xml: list[Path],
    organ: str,
    split: str,
    patch_size: int,
    contour_width: int,
    problems: list[str],
) -> int:
    """Check one image and its annotation and write its patches; returns how many (0 with a problem line)."""
    if len(xml) != 1:
        what = "no annotation" if not xml else f"{len(xml)} annotations {sorted(map(str, xml))}"
        problems.append(f"{path}: {what}; expected exactly one {path.stem}.xml under the input folder.")
        return 0
    image = _read_rgb(path, problems)
    try:
        polygons = read_polygons(xml[0])
    except (ValueError, OSError) as e:
        problems.append(str(e))
        return 0
    if image is None:
        return 0
    height, width = image.shape[:2]
    rows, cols = patch_starts(height, patch_size), patch_starts(width, patch_size)
    if not rows or not cols:
        problems.append(f"{path}: image of {height}x{width} pixels; expected at least patch_size={patch_size}.")
        return 0
    label = instance_labels(rasterise_instances(polygons, (height, width)), contour_width)
    for r in rows:
        for c in cols:
            crop = (slice(r, r + patch_size), slice(c, c + patch_size))
            stem = f"{path.stem}_y{r:04d}_x{c:04d}"
            writer.add(organ, split, stem, image[crop], label[crop], fmt="png", subject=path.stem)
    return len(rows) * len(cols)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line; see ``python -m scripts.data.prepare_nuclei --help``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input_dir", required=True, help="folder with H&E .tif images and MoNuSeg .xml annotations")
    parser.add_argument("--output_dir", required=True, help="data root to create (organ folders + centers.json)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--organ_table", help="CSV image,organ[,split]")
    source.add_argument("--organ_from_folder", action="store_true", help="organ = the image's folder name")
    parser.add_argument("--patch_size", type=int, default=256)
    parser.add_argument("--contour_width", type=int, default=2)
    parser.add_argument("--test_fraction", type=float, default=0.2, help="test images per organ (by image)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = prepare_nuclei(**vars(args))
    except (InputError, FileExistsError, ValueError) as error:  # the user's input: the message, no traceback
        parser.exit(1, f"{parser.prog}: {error}\n")
    print(f"prepared {out} (3 classes, 3-channel images: dataset.json declares both, every workflow reads them).")


if __name__ == "__main__":
    main()
