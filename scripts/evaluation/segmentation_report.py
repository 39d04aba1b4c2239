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
"""A trained segmentation network tested on real test folders: Dice and HD95 per class and image, with bootstrap
intervals, written as JSON and a markdown table (configs/segmentation_evaluate.json)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from scripts.data.transforms import mapped_label_names
from scripts.evaluation.intervals import PER_IMAGE, bootstrap_interval
from scripts.evaluation.segmentation_scores import center_scores

__all__ = ["load_weights", "class_names_of", "real_image_scores", "render_markdown", "write_test_scores"]

HD95_UNIT = "pixels (voxels) of the images resized to spatial_size"
"""What an HD95 value counts, as the scores state it."""


def load_weights(network: torch.nn.Module, ckpt_file: str | os.PathLike, device: torch.device | str = "cpu") -> None:
    """Load a checkpoint written by configs/segmentation.json (``segmentation.pt``, ``segmentation_best.pt``: a state
    dict) into ``network``, in eval mode.

    Raises:
        FileNotFoundError: no file at ``ckpt_file``.
        ValueError: the weights do not fit the network (another ``num_classes``, ``image_channels`` or UNet).
    """
    if not Path(ckpt_file).is_file():
        raise FileNotFoundError(
            f"segmentation weights {ckpt_file}: file not found (train with configs/segmentation.json)."
        )
    state = torch.load(ckpt_file, map_location=device, weights_only=True)
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[1:2] or [str(e)]
        raise ValueError(
            f"{ckpt_file}: the weights do not fit this UNet; expected one trained with the same num_classes, "
            f"image_channels and network settings, got: {first[0].strip()}"
        ) from e
    network.eval()


def class_names_of(
    center_dir: str | os.PathLike, num_classes: int, label_mapping: Mapping[Any, int] | None = None
) -> list[str]:
    """The ``num_classes`` class names, background first, from a center folder's ``dataset.json`` ``labels``
    (``class <k>`` for a value it does not name); with ``label_mapping``, the names of the label values mapped to
    each class (:py:func:`scripts.data.transforms.mapped_label_names`)."""
    meta = json.loads((Path(center_dir) / "dataset.json").read_text())
    labels = mapped_label_names(meta.get("labels", {}), label_mapping)
    return [str(labels.get(str(k), f"class {k}")) for k in range(int(num_classes))]


def real_image_scores(
    network: torch.nn.Module,
    test_dirs: Sequence[str | os.PathLike],
    class_names: Sequence[str],
    spatial_dims: int,
    spatial_size: Sequence[int],
    key: str = "test",
    resamples: int = 1000,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Dice and HD95 of ``network`` on each center folder's real ``key`` pairs, per foreground class: per image (with
    the image file, relative to its center folder), their means and per-image bootstrap 95 % intervals, as the
    evaluation protocol scores its segmentation networks (:py:func:`~scripts.evaluation.segmentation_scores.
    center_scores`, :py:func:`~scripts.evaluation.intervals.bootstrap_interval`). ``options``: the site's
    preprocessing options, as the UNet was trained with (``label_mapping``, ``intensity_channel_wise``,
    ``intensity_window``).

    Returns:
        ``{"data_list_key", "spatial_size", "hd95_unit", "bootstrap": {...}, "centers": {folder name: {"folder",
        "classes": {class: {"dice", "hd95", "n", "images", "dice_per_image", "hd95_per_image", "dice_bootstrap",
        "hd95_bootstrap"}}}}}``.
    """
    centers = {}
    for center_dir in test_dirs:
        folder = Path(center_dir)
        scores = center_scores(
            network, folder, class_names, spatial_dims, spatial_size, key, image_names=True, **dict(options or {})
        )
        for s in scores.values():
            s["images"] = [os.path.relpath(name, folder) for name in s["images"]]
            for m in ("dice", "hd95"):
                s[f"{m}_bootstrap"] = bootstrap_interval(s[f"{m}_per_image"], resamples, seed)
        centers[folder.name] = {"folder": str(folder), "classes": scores}
    return {
        "data_list_key": key,
        "spatial_size": list(spatial_size),
        "hd95_unit": HD95_UNIT,
        "bootstrap": {"resamples": int(resamples), "seed": int(seed), "interval": PER_IMAGE},
        "centers": centers,
    }


def _cell(mean: float | None, interval: list[float] | None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean} [{interval[0]}, {interval[1]}]" if interval else f"{mean}"


def render_markdown(scores: dict[str, Any]) -> str:
    """One table row per center and class: images with the class, mean Dice and mean HD95 with their intervals."""
    lines = [
        f"# Segmentation on the real `{scores['data_list_key']}` images",
        "",
        f"Checkpoint: `{scores.get('checkpoint', '?')}`. Mean over the images holding the class, with the "
        f"{scores['bootstrap']['interval']} ({scores['bootstrap']['resamples']} resamples) in brackets; "
        f"HD95 in {scores['hd95_unit']} ({scores['spatial_size']}).",
        "",
        "| center | class | images | Dice | HD95 |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for center, result in scores["centers"].items():
        for name, s in result["classes"].items():
            lines.append(
                f"| {center} | {name} | {s['n']} | {_cell(s['dice'], s['dice_bootstrap'])} "
                f"| {_cell(s['hd95'], s['hd95_bootstrap'])} |"
            )
    return "\n".join(lines) + "\n"


def write_test_scores(
    network: torch.nn.Module,
    ckpt_file: str | os.PathLike,
    test_dirs: Sequence[str | os.PathLike],
    class_names: Sequence[str],
    spatial_dims: int,
    spatial_size: Sequence[int],
    output_dir: str | os.PathLike,
    key: str = "test",
    resamples: int = 1000,
    seed: int = 0,
    device: torch.device | str = "cpu",
    options: Mapping[str, Any] | None = None,
) -> Path:
    """Load ``ckpt_file`` into ``network``, score it with :py:func:`real_image_scores` (the site's preprocessing
    ``options``) and write ``output_dir/segmentation_scores.json`` (every number) and ``segmentation_scores.md`` (the
    table); returns the JSON's path. ``output_dir`` must exist (the config makes it owner-only first)."""
    load_weights(network, ckpt_file, device)
    scores = {"checkpoint": str(ckpt_file)}
    scores.update(
        real_image_scores(network, test_dirs, class_names, spatial_dims, spatial_size, key, resamples, seed, options)
    )
    out = Path(output_dir) / "segmentation_scores.json"
    out.write_text(json.dumps(scores, indent=2) + "\n")
    out.with_suffix(".md").write_text(render_markdown(scores))
    return out
