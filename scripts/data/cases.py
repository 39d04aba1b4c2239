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
"""New cases to segment: the images of a folder or of an MSD dataset.json list (segmentation_inference.json)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from monai.data import load_decathlon_datalist

__all__ = ["NIFTI_SUFFIXES", "case_datalist", "case_name"]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
"""The image files a plain folder of cases is read for."""


def case_name(path: str | os.PathLike) -> str:
    """A case's name: its file name without the NIfTI suffix (the name its label map is written under)."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def case_datalist(dataset_dir: str | os.PathLike, key: str = "test") -> list[dict[str, Any]]:
    """``[{"image": path}, ...]`` of the cases to segment: the ``key`` list of ``dataset_dir/dataset.json`` when there
    is one (MSD-style; any ``label`` entries are left out), else every NIfTI file directly in ``dataset_dir``, sorted.

    Each case's label map is written under its name alone (:py:func:`case_name`), so two cases may not share one.

    Raises:
        FileNotFoundError: ``dataset_dir`` is no folder, or a listed image does not exist.
        ValueError: no case found, or two cases with the same name (one line naming them).
    """
    folder = Path(dataset_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder; expected a folder of NIfTI images or an MSD dataset folder.")
    meta = folder / "dataset.json"
    if meta.is_file():
        items = [{"image": it["image"]} for it in load_decathlon_datalist(str(meta), True, key, str(folder))]
        where = f"the '{key}' list of {meta}"
    else:
        items = [{"image": str(p)} for p in sorted(folder.iterdir()) if p.is_file() and p.name.endswith(NIFTI_SUFFIXES)]
        where = str(folder)
    if not items:
        raise ValueError(f"{where}: no image to segment; expected NIfTI files ({', '.join(NIFTI_SUFFIXES)}).")
    missing = [it["image"] for it in items if not os.path.isfile(it["image"])]
    if missing:
        raise FileNotFoundError(f"{where}: image file {missing[0]} does not exist ({len(missing)} missing).")
    names: dict[str, list[str]] = {}
    for it in items:
        names.setdefault(case_name(it["image"]), []).append(it["image"])
    shared = {name: paths for name, paths in names.items() if len(paths) > 1}
    if shared:
        name, paths = next(iter(shared.items()))
        raise ValueError(
            f"{where}: cases {paths} share the name {name!r}; their label maps would overwrite each other."
        )
    return items
