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
"""Writing MSD-style center folders and ``centers.json``: staged in a hidden folder, moved into place when complete."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import nibabel as nib
import numpy as np
from monai.data import partition_dataset
from PIL import Image

from scripts.files import CENTER_NAME, check_center_name

__all__ = ["CentersWriter", "seeded_split"]

SPLITS = {"training": "Tr", "test": "Ts"}


def seeded_split(items: Sequence[str], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split ``items`` into (training, test) with MONAI's seeded ``partition_dataset``; at least one item stays in
    training.

    Args:
        items: the items (cases, images) of one center.
        test_fraction: fraction of items for the test split, in [0, 1).
        seed: the shuffle's seed.

    Returns:
        the training and test items, each in the input order.
    """
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}.")
    n_test = min(round(test_fraction * len(items)), len(items) - 1)
    if n_test == 0:
        return list(items), []
    index = list(range(len(items)))
    train_idx, test_idx = partition_dataset(index, ratios=[len(items) - n_test, n_test], shuffle=True, seed=seed)
    test = set(test_idx)
    return [x for i, x in enumerate(items) if i not in test], [x for i, x in enumerate(items) if i in test]


class CentersWriter:
    """Writes center folders (``dataset.json``, ``imagesTr/ labelsTr/ imagesTs/ labelsTs/``) and ``centers.json``.

    Everything goes to a hidden staging folder beside ``output_dir``, which becomes ``output_dir`` only in
    :py:meth:`commit`; leaving the ``with`` block by an exception removes it, so a failed preparation leaves nothing.

    Args:
        output_dir: the data root to create; it must not exist, or be an empty folder.
        labels: the classes, ``{"0": "background", ...}``, written to every ``dataset.json``.
        modality: the ``modality`` entry of every ``dataset.json``.
        description: the ``description`` of every ``dataset.json``.

    Raises:
        FileExistsError: ``output_dir`` exists and is not empty.
    """

    def __init__(
        self, output_dir: str | os.PathLike, labels: Mapping[str, str], modality: Mapping[str, str], description: str
    ) -> None:
        self.output_dir = Path(output_dir).absolute()
        if self.output_dir.exists() and (not self.output_dir.is_dir() or any(self.output_dir.iterdir())):
            raise FileExistsError(f"{self.output_dir}: exists and is not empty; expected a new or empty folder.")
        self.labels = dict(labels)
        self.modality = dict(modality)
        self.description = description
        self.entries: dict[str, dict[str, list[dict[str, str]]]] = {}
        self.stage: Path | None = None

    def __enter__(self) -> CentersWriter:
        self.output_dir.parent.mkdir(parents=True, exist_ok=True)
        self.stage = Path(tempfile.mkdtemp(prefix=f".{self.output_dir.name}.", dir=self.output_dir.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.stage, 0o777 & ~umask)  # mkdtemp makes it private; the data root is an ordinary folder
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self.stage is not None and self.stage.exists():
            shutil.rmtree(self.stage)

    def add(
        self,
        center: str,
        split: str,
        stem: str,
        image: np.ndarray,
        label: np.ndarray,
        fmt: str = "nifti",
        subject: str | None = None,
    ) -> None:
        """Write one image/label pair of a center.

        Args:
            center: the center's folder name (a valid center name, :data:`scripts.files.CENTER_NAME`).
            split: ``"training"`` or ``"test"``.
            stem: the file name without extension (the same for the image and the label).
            image: ``nifti``: float array (H, W) or (D, H, W); ``png``: uint8 (H, W, 3) or (H, W).
            label: integer class map with the image's spatial shape.
            fmt: ``"nifti"`` (``.nii.gz``, identity affine) or ``"png"``.
            subject: the patient (case, slide) the pair comes from, recorded as the entry's ``"subject"`` when given,
                so that nearest-neighbour statistics compare patients, not neighbouring slices of one (a plain name).
        """
        if self.stage is None:
            raise RuntimeError("CentersWriter.add must be called inside its 'with' block.")
        check_center_name(center, f"data root {self.output_dir}")  # refused now, not at the first visit
        suffix = SPLITS[split]
        ext = ".nii.gz" if fmt == "nifti" else ".png"
        entry = {"image": f"images{suffix}/{stem}{ext}", "label": f"labels{suffix}/{stem}{ext}"}
        if subject is not None:
            if not isinstance(subject, str) or CENTER_NAME.fullmatch(subject) is None:
                raise ValueError(f"subject {subject!r:.80} of {stem}: expected a plain name (letters, digits, _ . -).")
            entry["subject"] = subject
        folder = self.stage / center
        for key, array in (("image", image), ("label", label)):
            path = folder / entry[key]
            path.parent.mkdir(parents=True, exist_ok=True)
            if fmt == "png":
                Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
            else:
                dtype = np.float32 if key == "image" else np.uint8
                nifti = nib.Nifti1Image(np.asarray(array, dtype=dtype), np.eye(4))
                nifti.header.set_data_dtype(dtype)
                nib.save(nifti, str(path))
        self.entries.setdefault(center, {"training": [], "test": []})[split].append(entry)

    def commit(
        self, order: Sequence[str], record: Mapping[str, Any], descriptions: Mapping[str, str] | None = None
    ) -> Path:
        """Write every ``dataset.json``, ``centers.json`` and ``prepare.json`` (``record``), then move into place.

        Args:
            order: the centers in visiting order (each must have at least one training pair).
            record: how the data were prepared (arguments, cases per center and split), kept as ``prepare.json``.
            descriptions: a center's own ``description`` (default: the writer's, for every center).

        Returns:
            ``output_dir``.
        """
        if self.stage is None:
            raise RuntimeError("CentersWriter.commit must be called inside its 'with' block.")
        empty = [c for c in order if not self.entries.get(c, {}).get("training")]
        if empty:
            raise ValueError(f"{self.output_dir}: centers {empty} have no training pair; expected at least one each.")
        for center in order:
            entries = self.entries[center]
            dataset = {
                "name": center,
                "description": (descriptions or {}).get(center, self.description),
                "labels": self.labels,
                "modality": self.modality,
                "numTraining": len(entries["training"]),
                "numTest": len(entries["test"]),
                "training": entries["training"],
                "test": entries["test"],
            }
            (self.stage / center / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")
        (self.stage / "centers.json").write_text(json.dumps({"order": list(order)}, indent=2) + "\n")
        (self.stage / "prepare.json").write_text(json.dumps(dict(record), indent=2) + "\n")
        if self.output_dir.exists():
            self.output_dir.rmdir()  # empty, checked on construction
        os.replace(self.stage, self.output_dir)
        self.stage = None
        return self.output_dir
