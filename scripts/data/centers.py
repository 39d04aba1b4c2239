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
"""Center folders (MSD layout), ``centers.json``, and the dataset that serves several online centers at once."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import get_track_meta, load_decathlon_datalist, set_track_meta
from monai.data.utils import to_affine_nd
from torch.utils.data import ConcatDataset, Dataset

from scripts.data.checks import (
    InputError,
    center_folders,
    center_order_problems,
    check_label_mapping,
    outside_problems,
    raise_if_problems,
    subject_problems,
)
from scripts.files import check_center_name

__all__ = [
    "read_center_order",
    "center_folders",  # defined in scripts.data.checks, importable here as before
    "DATASET_SETTINGS",
    "declared_settings",
    "dataset_setting",
    "center_name",
    "center_datalist",
    "shared_keys",
    "center_subjects",
    "outside_problems",  # defined in scripts.data.checks, importable here as before
    "OnlineCenters",
    "Untracked",
    "read_label_maps",
    "read_label_maps_with_affines",
    "seeded_subset",
    "held_out_split",
]


def read_center_order(data_root: str | os.PathLike, strict: bool = True) -> list[str]:
    """The center names, in visiting order, from ``<data_root>/centers.json`` (``{"order": [...]}``).

    Args:
        data_root: the folder with ``centers.json`` and the center folders.
        strict: also require every listed center to have a folder with a ``dataset.json`` (a workflow that checks
            all its inputs at once passes False here and reports missing folders with the other problems).

    Raises:
        InputError: no readable ``centers.json`` or a malformed ``order``; with ``strict``, also listed centers
            without a folder holding a ``dataset.json`` (one line per problem).
    """
    order, problems = center_order_problems(data_root)
    raise_if_problems(problems if strict or not order else [], f"the centers of {data_root}")
    return order


DATASET_SETTINGS = ("num_classes", "image_channels")
"""The settings a center's ``dataset.json`` declares: ``num_classes`` (its ``labels``: the largest class value + 1)
and ``image_channels`` (its ``modality``: one entry per image channel, as in the Medical Segmentation Decathlon)."""


def declared_settings(center_dir: str | os.PathLike, label_mapping: Mapping[int, int] | None = None) -> dict[str, int]:
    """What one center's ``dataset.json`` declares of :data:`DATASET_SETTINGS`; a setting it does not declare (no
    ``labels`` with integer keys, no ``modality`` object), or an unreadable ``dataset.json`` (the input checks report
    it), is left out. With ``label_mapping`` (checked, int keys), ``num_classes`` counts the classes the declared
    label values map to (values it does not map are left out here; the input checks report them)."""
    try:
        meta = json.loads((Path(center_dir) / "dataset.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    if not isinstance(meta, dict):
        return {}
    declared = {}
    labels, modality = meta.get("labels"), meta.get("modality")
    if isinstance(labels, dict) and labels:
        try:
            values = [int(k) for k in labels]
            if label_mapping is not None:
                values = [label_mapping[v] for v in values if v in label_mapping]
            declared["num_classes"] = max(values) + 1
        except ValueError:
            pass  # non-integer keys, or no mapped value: reported by the input checks
    if isinstance(modality, dict) and modality:
        declared["image_channels"] = len(modality)
    return declared


def dataset_setting(
    folders: str | os.PathLike | Sequence[str | os.PathLike],
    key: str,
    default: int,
    label_mapping: Mapping[Any, Any] | None = None,
) -> int:
    """A setting of :data:`DATASET_SETTINGS` as the centers' ``dataset.json`` declare it: every workflow's default,
    so that ``num_classes`` and ``image_channels`` are given once, where the data is described.

    Args:
        folders: a center folder, a folder of centers with ``centers.json``, or a list of either.
        key: ``"num_classes"`` or ``"image_channels"``.
        default: the value when no center declares it (or none is readable yet: the input checks report that).
        label_mapping: the site's label value -> class (:py:func:`scripts.data.checks.check_label_mapping`):
            ``num_classes`` is then the largest class the declared label values map to + 1.

    Raises:
        InputError: the centers declare different values (one line): one generator cannot serve both; or a
            malformed ``label_mapping``.
    """
    mapping = check_label_mapping(label_mapping)

    if key not in DATASET_SETTINGS:
        raise ValueError(f"key must be one of {DATASET_SETTINGS}, got {key!r}.")
    found = {
        str(d / "dataset.json"): s[key] for d in center_folders(folders) if key in (s := declared_settings(d, mapping))
    }
    values = sorted(set(found.values()))
    if len(values) > 1:
        listed = ", ".join(f"{path}: {value}" for path, value in found.items())
        raise InputError(
            f"the centers' dataset.json files declare different {key} ({listed}); one generator serves them all: "
            f"make their {'labels' if key == 'num_classes' else 'modality'} agree, or visit them in separate sequences."
        )
    return int(values[0]) if values else int(default)


def center_name(center_dir: str | os.PathLike) -> str:
    """A center's name: its folder's name, which must be a valid center name (:data:`scripts.files.CENTER_NAME`).

    Raises:
        PathError: the folder's name is not a valid center name.
    """
    return check_center_name(Path(os.path.normpath(center_dir)).name, f"center folder {center_dir}")


def center_datalist(center_dir: str | os.PathLike, code: int, key: str = "training") -> list[dict[str, Any]]:
    """A center's data list (image/label file pairs) from its ``dataset.json``, each item tagged with its center code.

    Raises:
        FileNotFoundError: no ``dataset.json``, or a listed file is missing.
        ValueError: the list under ``key`` is empty.
        InputError: a listed file resolves outside the center folder (one line per file).
    """
    meta = Path(center_dir) / "dataset.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta}: not found; a center folder needs an MSD-style dataset.json.")
    items = load_decathlon_datalist(str(meta), is_segmentation=True, data_list_key=key, base_dir=str(center_dir))
    if not items:
        raise ValueError(f"{meta}: the '{key}' list is empty; a visit needs at least one image/label pair.")
    raise_if_problems(outside_problems(center_dir, items, meta), f"the '{key}' list of {meta}")
    for item in items:
        for k in ("image", "label"):
            if not os.path.isfile(item[k]):
                raise FileNotFoundError(f"{meta}: {k} file {item[k]} listed under '{key}' does not exist.")
        item.pop("subject", None)  # whose slice it is stays with the center's audits (center_subjects), not in batches
        item["center"] = int(code)
    return items


def shared_keys(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``items`` with only the keys every one of them has: data lists pooled from a real center and synthetic sets
    (whose entries also record their label source) can then be batched together. A list whose items share their keys
    (one folder's) is returned as it is."""
    keys = set.intersection(*(set(item) for item in items)) if items else set()
    return [item if set(item) == keys else {k: v for k, v in item.items() if k in keys} for item in items]


def center_subjects(center_dir: str | os.PathLike, key: str = "training") -> list[str]:
    """Each entry's subject (the patient a slice or patch comes from), in the order of the ``key`` list of the
    center's ``dataset.json``: its ``"subject"`` (a plain name, :data:`scripts.files.CENTER_NAME`'s pattern, checked
    with the center's inputs), or, for an entry without one, a name of its own (it counts as its own subject).

    The subjects only group a center's own maps and images for its nearest-neighbour statistics (a slice's neighbour
    of the same patient is not another patient); they are never written into anything that leaves the center.

    Raises:
        FileNotFoundError: no ``dataset.json``.
        InputError: a ``subject`` that is not a plain name (one line per entry).
    """
    meta = Path(center_dir) / "dataset.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta}: not found; a center folder needs an MSD-style dataset.json.")
    items = json.loads(meta.read_text()).get(key) or []
    raise_if_problems(subject_problems(items, meta, key), f"the '{key}' list of {meta}")
    # "#" is in no plain name, so an entry without a subject is never another entry's subject
    return [
        item["subject"] if isinstance(item, dict) and "subject" in item else f"#{i}" for i, item in enumerate(items)
    ]


class Untracked(Dataset):
    """``dataset`` with MONAI's metadata tracking off while an item is made: its random transforms then work on, and
    return, plain tensors (the same values, drawn from the same random streams), and a training batch reaches the
    network as plain tensors instead of ``MetaTensor``, whose per-operation bookkeeping costs small networks much of
    their step. MONAI has the global switch (``set_track_meta``) but no dataset that scopes it, hence this one. The
    switch is per process: use it with ``DataLoader`` workers (processes) or none, not with threads.

    Args:
        dataset: a map-style dataset, e.g. a ``CacheDataset`` whose cached part already dropped the metadata.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        tracking = get_track_meta()
        set_track_meta(False)
        try:
            return self.dataset[index]
        finally:
            set_track_meta(tracking)


class OnlineCenters(Dataset):
    """The centers online in one visit, served together: item ``i`` is a tuple with one sample per group.

    With one discriminator per center, each center is its own group; with a shared discriminator (joint
    training), all centers form one group. Groups shorter than the longest are cycled.

    Args:
        datasets: one dataset per online center (items carry ``image``, ``label``, ``center``).
        shared_discriminator: put all centers in one group.
    """

    def __init__(self, datasets: Sequence[Dataset], shared_discriminator: bool = False) -> None:
        if not datasets:
            raise ValueError("OnlineCenters needs at least one center dataset.")
        groups = [ConcatDataset(list(datasets))] if shared_discriminator else list(datasets)
        self.groups: list[Dataset] = [Untracked(g) for g in groups]

    @property
    def num_groups(self) -> int:
        """Number of groups, i.e. of temporary discriminators needed."""
        return len(self.groups)

    def __len__(self) -> int:
        return max(len(g) for g in self.groups)

    def __getitem__(self, index: int) -> tuple[dict, ...]:
        # a tuple, not a list: MONAI's list_data_collate would flatten a list into extra samples
        return tuple(g[index % len(g)] for g in self.groups)


def read_label_maps(
    center_dir: str | os.PathLike,
    spatial_dims: int,
    spatial_size: Sequence[int] | None = None,
    key: str = "training",
    label_mapping: Mapping[Any, Any] | None = None,
) -> tuple[torch.Tensor, list[str]]:
    """A center's label maps under ``key``, read as the visit reads them (the shared preprocessing, labels only: no
    image is read), as uint8 (N, 1, *spatial), with their paths as ``<center>/<path in the folder>``; with
    ``label_mapping``, the site's label values mapped to the classes as training maps them.

    Raises:
        FileNotFoundError: no ``dataset.json``, or a listed label file is missing.
        ValueError: the list under ``key`` is empty.
        InputError: a listed file resolves outside the center folder (one line per file), or holds a label value
            ``label_mapping`` does not name (one line).
    """
    maps, names, _ = read_label_maps_with_affines(center_dir, spatial_dims, spatial_size, key, label_mapping)
    return maps, names


def read_label_maps_with_affines(
    center_dir: str | os.PathLike,
    spatial_dims: int,
    spatial_size: Sequence[int] | None = None,
    key: str = "training",
    label_mapping: Mapping[Any, Any] | None = None,
) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """:py:func:`read_label_maps`, and each map's affine (N, 4, 4) float64 as read: the file's voxel-to-world matrix,
    updated by MONAI's ``Resized`` to the resized grid (the same field of view at the new spacing), so what is
    written at this size lies where the file's map lies.

    Raises:
        FileNotFoundError: no ``dataset.json``, or a listed label file is missing.
        ValueError: the list under ``key`` is empty.
        InputError: a listed file resolves outside the center folder (one line per file), or holds a label value
            ``label_mapping`` does not name (one line).
    """
    from scripts.data.transforms import preprocessing

    center_dir = Path(center_dir)
    meta = center_dir / "dataset.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta}: not found; a center folder needs an MSD-style dataset.json.")
    items = load_decathlon_datalist(str(meta), is_segmentation=True, data_list_key=key, base_dir=str(center_dir))
    if not items:
        raise ValueError(f"{meta}: the '{key}' list is empty; expected at least one label map.")
    raise_if_problems(outside_problems(center_dir, items, meta), f"the '{key}' list of {meta}")
    load = preprocessing(spatial_dims, spatial_size, keys=("label",), track_meta=True, label_mapping=label_mapping)
    maps, names, affines = [], [], []
    for item in items:
        if not os.path.isfile(item["label"]):
            raise FileNotFoundError(f"{meta}: label file {item['label']} listed under '{key}' does not exist.")
        try:
            label = load({"label": item["label"]})["label"]
        except RuntimeError as e:  # MONAI's Compose wraps a transform's error: the refusal is the user's one line
            if isinstance(e.__cause__, InputError):
                raise e.__cause__ from None
            raise
        affines.append(to_affine_nd(3, torch.as_tensor(label.affine, dtype=torch.float64)))  # a PNG's is 3x3
        maps.append(label.as_tensor())
        names.append(f"{center_dir.name}/{os.path.relpath(item['label'], center_dir)}")
    return torch.stack(maps), names, torch.stack(affines)


def seeded_subset(maps: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """Up to ``count`` of ``maps`` (a seeded choice, in their original order)."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(maps), generator=gen)[: min(count, len(maps))].sort().values
    return maps[idx]


def held_out_split(
    items: Sequence[dict[str, Any]], fraction: float, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split a training list into (training, validation): a seeded ``fraction`` of it held out for validation (at
    least one item when ``fraction > 0`` and the list has two; never every item), the rest in their original order.

    Written here rather than with ``monai.data.partition_dataset``, whose rounding gives an empty share to a small
    list.

    Raises:
        ValueError: ``fraction`` outside [0, 1).
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction!r}.")
    items = list(items)
    count = 0 if fraction == 0 or len(items) < 2 else min(len(items) - 1, max(1, round(fraction * len(items))))
    held = set(torch.randperm(len(items), generator=torch.Generator().manual_seed(seed))[:count].tolist())
    return [it for i, it in enumerate(items) if i not in held], [it for i, it in enumerate(items) if i in held]
