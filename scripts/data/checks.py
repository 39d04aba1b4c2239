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
"""Checks of a workflow's inputs before anything is trained or written: one line per problem, naming the file."""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scripts.files import CENTER_NAME, center_name_problem, inside

__all__ = [
    "InputError",
    "center_problems",
    "center_order_problems",
    "handoff_problems",
    "check_visit_inputs",
    "check_sequence_inputs",
    "check_dataset_settings",
    "check_known_centers",
    "check_label_mapping",
    "center_folders",
    "outside_problems",
    "unmapped_label_problem",
    "raise_if_problems",
    "subject_problems",
]

logger = logging.getLogger(__name__)

MAX_LINES = 50
"""At most this many problem lines are printed; the rest are counted."""


class InputError(ValueError):
    """A workflow's inputs are unusable. The message has one line per problem: which file, what is wrong, and what
    was expected."""


def raise_if_problems(problems: Sequence[str], what: str) -> None:
    """Raise one :py:class:`InputError` listing every problem (at most :data:`MAX_LINES` lines), or do nothing.

    Args:
        problems: one line per problem.
        what: what was checked, for the first line (e.g. ``"the inputs of this visit"``).

    Raises:
        InputError: there is at least one problem.
    """
    if not problems:
        return
    lines = list(problems[:MAX_LINES])
    if len(problems) > MAX_LINES:
        lines.append(f"... and {len(problems) - MAX_LINES} more problem(s).")
    raise InputError(
        f"{len(problems)} problem(s) with {what}; nothing was trained or written:\n"
        + "\n".join(f"  {ln}" for ln in lines)
    )


def subject_problems(items: Any, meta_path: str | os.PathLike, key: str = "training") -> list[str]:
    """One line per entry of a ``dataset.json`` list whose optional ``"subject"`` (the patient the slice or patch
    comes from) is not a plain name: a string of the center-name pattern (:data:`scripts.files.CENTER_NAME`:
    letters, digits, ``_ . -``, at most 64 characters, not starting with a punctuation mark)."""
    if not isinstance(items, list):
        return []
    return [
        f"{meta_path}: '{key}' entry {i} has subject {item['subject']!r:.80}; expected a plain name (letters, digits, "
        "'_', '.', '-'; at most 64 characters), e.g. the case id."
        for i, item in enumerate(items)
        if isinstance(item, Mapping)
        and "subject" in item
        and not (isinstance(item["subject"], str) and CENTER_NAME.fullmatch(item["subject"]))
    ]


def integer_value(value: Any) -> int | None:
    """``value`` as an int when it is one (an int, or a string of one: JSON object keys are strings), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    return None


def check_label_mapping(
    label_mapping: Mapping[Any, Any] | None, num_classes: int | None = None
) -> dict[int, int] | None:
    """A ``label_mapping`` setting (a site's label value -> the bundle's class) checked and normalised.

    Args:
        label_mapping: None (no mapping: label values are the classes), or a non-empty mapping whose keys are integer
            label values (ints, or strings of ints as JSON object keys are) and whose values are integer classes.
        num_classes: the configuration's classes, when known: every class must lie in ``0..num_classes-1``.

    Returns:
        None, or the mapping with int keys and values.

    Raises:
        InputError: not a mapping, empty, a key or value that is not an integer, or a class out of range (one line).
    """
    if label_mapping is None:
        return None
    expected = 'expected null or an object of integer label value -> class, e.g. {"0": 0, "1": 1, "2": 2, "4": 3}' + (
        "" if num_classes is None else f" with classes in 0..{num_classes - 1}"
    )
    if not isinstance(label_mapping, Mapping) or not label_mapping:
        raise InputError(f"label_mapping is {label_mapping!r:.120}; {expected}.")
    mapping: dict[int, int] = {}
    for key, value in label_mapping.items():
        k, v = integer_value(key), None if isinstance(value, str) else integer_value(value)
        if k is None or v is None or v < 0 or (num_classes is not None and v >= num_classes):
            raise InputError(f"label_mapping maps {key!r:.40} to {value!r:.40}; {expected}.")
        if k in mapping:
            raise InputError(f"label_mapping names label value {k} twice; {expected}.")
        mapping[k] = v
    return mapping


def unmapped_label_problem(source: Any, values: Sequence[float], label_mapping: Mapping[int, int]) -> str | None:
    """The one line refusing a label map whose ``values`` include some that ``label_mapping`` does not name (None when
    it names them all): the file, the values, the values the mapping names."""
    unmapped = sorted({v for v in values if v not in label_mapping})
    if not unmapped:
        return None
    shown = [int(v) if float(v).is_integer() else v for v in unmapped]
    return (
        f"{source}: label values {shown} are not in label_mapping (it maps {sorted(label_mapping)}); add them to "
        "label_mapping, or fix the file."
    )


def _read_json(path: Path, problems: list[str]) -> Any:
    """The content of a JSON file, or None with a problem line."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.append(f"{path}: not readable JSON ({type(e).__name__}: {e}).")
        return None


def center_order_problems(data_root: str | os.PathLike) -> tuple[list[str], list[str]]:
    """The center order of ``<data_root>/centers.json`` and every problem with it.

    Returns:
        (center names, problem lines): a listed center without a folder holding a ``dataset.json`` is a problem.
    """
    path = Path(data_root) / "centers.json"
    if not path.is_file():
        return [], [f'{path}: not found; expected a file {{"order": ["center_a", ...]}} beside the center folders.']
    problems: list[str] = []
    content = _read_json(path, problems)
    if content is None:
        return [], problems
    order = content.get("order") if isinstance(content, dict) else None
    if not isinstance(order, list) or not order or not all(isinstance(c, str) and c for c in order):
        return [], [f"{path}: 'order' is {order!r}; expected a non-empty list of center folder names."]
    bad = [problem for c in order if (problem := center_name_problem(c))]
    if bad:  # a name such as "../x" would lead the sequence out of data_root and its outputs out of output_dir
        return [], [f"{path}: {problem}." for problem in bad]
    if len(set(order)) != len(order):
        dupes = sorted({c for c in order if order.count(c) > 1})
        problems.append(f"{path}: centers {dupes} are listed more than once; expected unique names.")
    for name in order:
        folder = Path(data_root) / name
        if not folder.is_dir():
            problems.append(f"{path}: center {name!r} has no folder {folder}; expected one folder per listed center.")
        elif not (folder / "dataset.json").is_file():
            problems.append(f"{folder / 'dataset.json'}: not found; center {name!r} needs an MSD-style dataset.json.")
    return order, problems


def center_folders(folders: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Center folders: a folder with ``centers.json`` stands for its centers, any other folder for itself."""
    out: list[Path] = []
    for folder in [folders] if isinstance(folders, (str, os.PathLike)) else folders:
        folder = Path(folder)
        if (folder / "centers.json").is_file() and not (folder / "dataset.json").is_file():
            out += [folder / name for name in center_order_problems(folder)[0]]
        else:
            out.append(folder)
    return out


def outside_problems(
    center_dir: str | os.PathLike, items: list[dict[str, Any]], source: str | os.PathLike
) -> list[str]:
    """One line per ``image``/``label`` file of ``items`` (absolute paths, as MONAI's data list gives them) that does
    not resolve, links followed, inside ``center_dir``: a center trains only on its own files."""
    folder = Path(center_dir).resolve()
    return [
        f"{item[k]}: listed in {source} but resolves to {Path(item[k]).resolve()}, outside the center folder "
        f"{folder}; expected files inside the center's own folder (relative paths, no links out of it)."
        for item in items
        for k in ("image", "label")
        if isinstance(item.get(k), str) and not inside(item[k], folder)
    ]


def _declared_labels(
    meta_path: Path,
    meta: Mapping,
    num_classes: int,
    problems: list[str],
    label_mapping: Mapping[int, int] | None = None,
) -> set[int] | None:
    """The label values a ``dataset.json`` declares (keys of ``labels``), checked against ``num_classes``: the values
    themselves, or with ``label_mapping`` the classes it maps them to (a declared value it does not map is a
    problem)."""
    labels = meta.get("labels")
    if not isinstance(labels, Mapping) or not labels:
        problems.append(f'{meta_path}: no "labels"; expected the classes, e.g. {{"0": "background", "1": "brain"}}.')
        return None
    try:
        values = {int(k) for k in labels}
    except ValueError:
        problems.append(f"{meta_path}: label keys {sorted(labels)} are not all integers; expected class values.")
        return None
    declared = values
    if label_mapping is not None:
        unmapped = sorted(v for v in values if v not in label_mapping)
        if unmapped:
            problems.append(
                f"{meta_path}: declares label values {unmapped} that label_mapping does not map (it maps "
                f"{sorted(label_mapping)}); add them to label_mapping."
            )
            return declared  # the classes they would give are unknown: nothing more to check
        values = {label_mapping[v] for v in values}
    outside = sorted(v for v in values if not 0 <= v < num_classes)
    if outside:
        problems.append(
            f"{meta_path}: declares label values {outside}, but the configuration has num_classes={num_classes}; "
            f"expected values in 0..{num_classes - 1} (or set num_classes={max(values) + 1})."
        )
    elif max(values) + 1 != num_classes:
        problems.append(
            f"{meta_path}: declares {max(values) + 1} classes (label values up to {max(values)}), but the "
            f"configuration has num_classes={num_classes}; leave num_classes unset to read it from dataset.json, or "
            'declare every class under "labels".'
            + ("" if label_mapping is None else " (label values count as the classes label_mapping maps them to)")
        )
    return declared


def _declared_modality(meta_path: Path, meta: Mapping, image_channels: int, problems: list[str]) -> None:
    """The image channels a ``dataset.json`` declares (entries of ``modality``, when given), checked against
    ``image_channels``."""
    modality = meta.get("modality")
    if isinstance(modality, Mapping) and modality and len(modality) != image_channels:
        problems.append(
            f"{meta_path}: declares {len(modality)} image channel(s) (modality {dict(modality)}), but the "
            f"configuration has image_channels={image_channels}; leave image_channels unset to read it from "
            "dataset.json, or declare one modality entry per image channel."
        )


def _spatial(array: np.ndarray, spatial_dims: int) -> np.ndarray:
    """Drop trailing singleton spatial axes of a channel-first array, as the training transforms do."""
    while array.ndim - 1 > spatial_dims and array.shape[-1] == 1:
        array = array[..., 0]
    return array


@functools.lru_cache(maxsize=1)
def _loader() -> Any:
    """MONAI's ``LoadImage`` as the training transforms use it (image only, channel first)."""
    from monai.transforms import LoadImage

    return LoadImage(image_only=True, ensure_channel_first=True)


def _load(path: str, problems: list[str], role: str, source: Path) -> np.ndarray | None:
    """Read one file as the training transforms do (MONAI ``LoadImage``, channel first), or add a problem line."""
    if not os.path.isfile(path):
        problems.append(f"{path}: not found; the {role} file is listed in {source}.")
        return None
    try:
        data = _loader()(path)
    except Exception as e:  # noqa: BLE001 - any reader failure means the same thing to the user
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        problems.append(f"{path}: unreadable {role} file ({type(e).__name__}: {first[:200]}); listed in {source}.")
        return None
    return np.asarray(data)


def _pair_problems(
    paths: Mapping[str, str],
    meta_path: Path,
    spatial_dims: int,
    image_channels: int,
    declared: set[int] | None,
    label_mapping: Mapping[int, int] | None = None,
) -> tuple[list[str], bool]:
    """Every problem with one image/label pair, read as training reads it, and whether the image is constant (one
    intensity everywhere: nothing for the discriminator to learn from, and a zero range to scale)."""
    problems: list[str] = []
    constant = False
    image = _load(paths["image"], problems, "image", meta_path)
    label = _load(paths["label"], problems, "label", meta_path)
    if image is not None:
        image = _spatial(image, spatial_dims)
        if image.ndim - 1 != spatial_dims or image.shape[0] != image_channels:
            problems.append(
                f"{paths['image']}: image of shape {image.shape[1:]} with {image.shape[0]} channel(s); expected "
                f"{spatial_dims} spatial dimensions and image_channels={image_channels} as in the configuration."
            )
            image = None
        elif not np.all(np.isfinite(image)):
            bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
            problems.append(f"{paths['image']}: {bad} NaN/Inf intensities; expected finite values only.")
        elif image.size and float(image.min()) == float(image.max()):
            constant = True
            logger.warning(
                f"{paths['image']}: every intensity is {float(image.min()):g} (a constant image; listed in "
                f"{meta_path}); check the file, it teaches the generator nothing."
            )
    if label is not None:
        label = _spatial(label, spatial_dims)
        if label.ndim - 1 != spatial_dims or label.shape[0] != 1:
            problems.append(
                f"{paths['label']}: label of shape {label.shape[1:]} with {label.shape[0]} channel(s); expected "
                f"one channel and {spatial_dims} spatial dimensions."
            )
            return problems, constant
        if image is not None and image.shape[1:] != label.shape[1:]:
            problems.append(
                f"{paths['label']}: label shape {label.shape[1:]} differs from its image's {image.shape[1:]} "
                f"({paths['image']}); expected the same spatial shape."
            )
        if not np.all(np.isfinite(label)) or np.any(label != np.round(label)):
            problems.append(f"{paths['label']}: non-integer or NaN/Inf label values; expected integer classes.")
            return problems, constant
        values = {int(v) for v in np.unique(label)}
        unmapped = None
        if label_mapping is not None:  # the line the preprocessing itself would refuse the file with
            unmapped = unmapped_label_problem(paths["label"], sorted(values), label_mapping)
        if unmapped:
            problems.append(unmapped)
        elif declared is not None and not values <= declared:
            problems.append(
                f"{paths['label']}: label values {sorted(values - declared)} are not declared in {meta_path}; "
                f"expected values in {sorted(declared)}."
            )
    return problems, constant


def center_problems(
    center_dir: str | os.PathLike,
    spatial_dims: int,
    image_channels: int,
    num_classes: int,
    key: str = "training",
    read_files: bool = True,
    label_mapping: Mapping[Any, Any] | None = None,
) -> list[str]:
    """Every problem with one center folder for a configuration.

    Checks ``dataset.json`` (readable, declared ``labels`` giving ``num_classes`` classes, a ``modality`` (when
    declared) with ``image_channels`` entries, a non-empty ``key`` list of ``{"image", "label"}`` entries, each with
    an optional plain-name ``subject``) and, with ``read_files``, every listed file as training reads it: present and
    readable; ``spatial_dims`` spatial dimensions and ``image_channels`` channels; a one-channel label of the image's
    spatial shape; finite intensities; integer label values among the declared ``labels`` (and, with
    ``label_mapping``, values it maps, onto ``num_classes`` classes).

    Args:
        center_dir: the center folder.
        spatial_dims: spatial dimensions of the configuration.
        image_channels: image channels of the configuration.
        num_classes: label classes of the configuration.
        key: which list of ``dataset.json`` to check.
        read_files: read every listed file (otherwise only ``dataset.json`` and the files' presence are checked).
        label_mapping: the site's label value -> class (:py:func:`check_label_mapping`), or
            None when the label values are the classes.

    Returns:
        one line per problem: the file, what is wrong, what was expected.
    """
    mapping = check_label_mapping(label_mapping, num_classes)
    center_dir = Path(center_dir)
    meta_path = center_dir / "dataset.json"
    problems: list[str] = []
    if not center_dir.is_dir():
        return [f"{center_dir}: center folder not found; expected a folder with an MSD-style dataset.json."]
    if not meta_path.is_file():
        return [f"{meta_path}: not found; a center folder needs an MSD-style dataset.json."]
    meta = _read_json(meta_path, problems)
    if meta is None:
        return problems
    if not isinstance(meta, Mapping):
        return [f"{meta_path}: holds a {type(meta).__name__}; expected a JSON object with 'labels' and '{key}'."]
    declared = _declared_labels(meta_path, meta, num_classes, problems, mapping)
    _declared_modality(meta_path, meta, image_channels, problems)
    items = meta.get(key)
    if not isinstance(items, list) or not items:
        problems.append(
            f"{meta_path}: the '{key}' list is {'missing' if items is None else 'empty'}; expected at least one "
            '{"image": ..., "label": ...} entry.'
        )
        return problems
    problems += subject_problems(items, meta_path, key)
    read, constant = 0, 0
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or not all(isinstance(item.get(k), str) for k in ("image", "label")):
            problems.append(f'{meta_path}: \'{key}\' entry {i} is {item!r}; expected {{"image": path, "label": path}}.')
            continue
        # as MONAI's data list joins them (an absolute path stays as it is), then held to the center's own folder
        paths = {k: os.path.normpath(os.path.join(center_dir, item[k])) for k in ("image", "label")}
        outside = outside_problems(center_dir, [paths], meta_path)
        if outside:
            problems += outside
            continue
        if not read_files:
            problems += [
                f"{p}: not found; the {k} file is listed in {meta_path}."
                for k, p in paths.items()
                if not os.path.isfile(p)
            ]
            continue
        pair, flat = _pair_problems(paths, meta_path, spatial_dims, image_channels, declared, mapping)
        problems += pair
        read, constant = read + 1, constant + flat
    if read and constant == read and key == "training":
        problems.append(
            f"{meta_path}: every one of the {read} '{key}' images is constant (one intensity each); expected real "
            "images (check the export of this center)."
        )
    return problems


def check_dataset_settings(
    folders: str | os.PathLike | Sequence[str | os.PathLike],
    num_classes: int,
    image_channels: int,
    what: str,
    label_mapping: Mapping[Any, Any] | None = None,
) -> None:
    """Refuse ``num_classes`` / ``image_channels`` that contradict what the folders' ``dataset.json`` declare (for a
    workflow that reads no image before it runs, e.g. segmentation).

    Args:
        folders: center folders (or folders of centers with ``centers.json``).
        num_classes: the configuration's classes.
        image_channels: the configuration's image channels.
        what: what is checked, for the message (e.g. ``"the segmentation training data"``).
        label_mapping: the site's label value -> class, or None when the label values are the classes.

    Raises:
        InputError: a malformed ``label_mapping``, or one line per contradicting ``dataset.json``.
    """
    mapping = check_label_mapping(label_mapping, num_classes)
    problems: list[str] = []
    for folder in center_folders(folders):
        meta_path = folder / "dataset.json"
        meta = _read_json(meta_path, problems) if meta_path.is_file() else None
        if isinstance(meta, Mapping):
            if isinstance(meta.get("labels"), Mapping) and meta["labels"]:
                _declared_labels(meta_path, meta, num_classes, problems, mapping)
            _declared_modality(meta_path, meta, image_channels, problems)
    raise_if_problems(problems, what)


def check_known_centers(
    center_dirs: Sequence[str | os.PathLike], codes: Mapping[str, int], handoff: str | os.PathLike
) -> None:
    """Refuse to score a generator on centers its hand-off never visited (it has no code, so no style, for them).

    Raises:
        InputError: one line naming the unknown centers and the known ones.
    """
    unknown = [Path(d).name for d in center_dirs if Path(d).name not in codes]
    if unknown:
        raise InputError(
            f"hand-off {handoff} has no center code for {unknown} (it knows {sorted(codes, key=codes.get)}); "
            "evaluate it on centers it visited: pass --dataset_dir one of them, or a folder whose centers.json lists "
            "only those."
        )


def handoff_problems(
    handoff_in: str | os.PathLike | None,
    network: Mapping[str, int],
    spatial_size: Sequence[int] | None = None,
    new_centers: Sequence[str] = (),
) -> list[str]:
    """Every problem with an incoming hand-off for a configuration (none when ``handoff_in`` is empty): the whole
    hand-off contract (:py:func:`scripts.handoff.load_handoff`: checksum, signature, structure), the generator and
    spatial size of this configuration, and room in the registry for the new centers.

    Args:
        handoff_in: the hand-off file, or None / "".
        network: the generator settings this configuration builds (``TDGANGenerator.settings``).
        spatial_size: the configuration's spatial size, to check the label bank against.
        new_centers: the centers this visit adds, to check the registry has room for them.

    Returns:
        one line per problem.
    """
    from scripts.handoff import HandoffError, load_handoff

    if not handoff_in:
        return []
    try:
        handoff = load_handoff(handoff_in, dict(network), spatial_size)
    except HandoffError as e:
        return [str(e)]
    problems = []
    registry = [e["name"] for e in handoff.registry]
    new = [c for c in dict.fromkeys(new_centers) if c not in registry]
    for code, name in enumerate(new, start=len(registry)):
        if code >= network["max_centers"]:
            problems.append(
                f"hand-off {handoff_in}: center {name!r} needs code {code} but the generator holds max_centers="
                f"{network['max_centers']} (registry: {registry}); expected a generator with room for it."
            )
    return problems


def check_visit_inputs(
    center_dirs: Sequence[str | os.PathLike],
    network: Mapping[str, int],
    spatial_size: Sequence[int] | None = None,
    handoff_in: str | os.PathLike | None = None,
    check_data: bool = True,
    label_mapping: Mapping[Any, Any] | None = None,
) -> None:
    """Check a visit's centers and incoming hand-off before anything is built or written.

    Args:
        center_dirs: the centers online in the visit.
        network: the generator settings of the configuration (``TDGANGenerator.settings``).
        spatial_size: the configuration's spatial size.
        handoff_in: the incoming hand-off, or None at the first center.
        check_data: read every training file (a sequence that already checked all its centers passes False).
        label_mapping: the site's label value -> class, or None when the label values are the classes.

    Raises:
        InputError: one line per problem found.
    """
    problems: list[str] = []
    names = [Path(os.path.normpath(c)).name for c in center_dirs]
    problems += [f"center folder {c}: {p}." for c, n in zip(center_dirs, names) if (p := center_name_problem(n))]
    for center in center_dirs:
        problems += center_problems(
            center,
            network["spatial_dims"],
            network["out_channels"],
            network["num_classes"],
            read_files=check_data,
            label_mapping=label_mapping,
        )
    problems += handoff_problems(handoff_in, network, spatial_size, names)
    raise_if_problems(problems, "the inputs of this visit")
    what = f"{len(center_dirs)} center(s)" + ("" if check_data else " (dataset.json only: check_data=False)")
    logger.info(f"inputs checked: {what}{', hand-off' if handoff_in else ''}, no problem found.")


def check_sequence_inputs(
    data_root: str | os.PathLike,
    order: Sequence[str],
    network: Mapping[str, int],
    spatial_size: Sequence[int] | None = None,
    handoffs: Sequence[str | os.PathLike] = (),
    label_mapping: Mapping[Any, Any] | None = None,
) -> None:
    """Check every center of a sequence, and the hand-offs already written (resume), before the first visit.

    Args:
        data_root: the folder with ``centers.json`` and the center folders.
        order: the centers to visit.
        network: the generator settings of the visit configuration.
        spatial_size: the visit configuration's spatial size.
        handoffs: existing hand-offs that the sequence would resume from.
        label_mapping: the sites' label value -> class, or None when the label values are the classes.

    Raises:
        InputError: one line per problem found.
    """
    known, problems = center_order_problems(data_root)
    for name in order:
        if name in known and (Path(data_root) / name / "dataset.json").is_file():
            problems += center_problems(
                Path(data_root) / name,
                network["spatial_dims"],
                network["out_channels"],
                network["num_classes"],
                label_mapping=label_mapping,
            )
    for path in handoffs:
        problems += handoff_problems(path, network, spatial_size)
    if len(order) > network["max_centers"]:
        problems.append(
            f"{Path(data_root) / 'centers.json'}: {len(order)} centers to visit but max_centers="
            f"{network['max_centers']}; expected at most {network['max_centers']} (raise max_centers)."
        )
    raise_if_problems(problems, f"the inputs of the sequence over {Path(data_root)}")
    logger.info(f"inputs checked: {len(order)} center(s) in {data_root}, no problem found.")
