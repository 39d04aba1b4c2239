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
"""How close a center's real label maps are to other subjects' maps, the ceiling that follows, and new maps under it."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from scripts.data.centers import center_subjects, read_center_order, read_label_maps
from scripts.data.demo import make_demo_centers
from scripts.data.label_maps import (
    DEFAULT_QUANTILE,
    LabelMapTooCloseError,
    calibrate_ceiling,
    class_dice,
    label_map_similarity,
    nearest_other_subject,
    new_label_maps,
)

__all__ = ["summary", "training_label_maps", "class_dice_to_nearest", "measure", "main"]


def summary(values: torch.Tensor) -> dict[str, float]:
    """Count, median, 5th/25th/75th/95th percentiles, min and max, rounded to 3 decimals (only the count when
    empty)."""
    v = values.double().flatten()
    if v.numel() == 0:
        return {"n": 0}
    q = torch.quantile(v, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64)).tolist()
    names = ("q05", "q25", "median", "q75", "q95")
    return {
        "n": int(v.numel()),
        "min": round(float(v.min()), 3),
        **{n: round(x, 3) for n, x in zip(names, q)},
        "max": round(float(v.max()), 3),
    }


def class_content(maps: torch.Tensor, classes: Sequence[int]) -> dict[str, dict[str, float]]:
    """For each of ``classes``: the share of ``maps`` holding it and its mean pixel count in those that do."""
    out = {}
    for c in classes:
        size = (maps == c).flatten(1).sum(1).double()
        held = size > 0
        out[str(c)] = {
            "share_of_maps": round(float(held.double().mean()), 3),
            "mean_pixels_when_held": round(float(size[held].mean()), 1) if bool(held.any()) else 0.0,
        }
    return out


def class_dice_to_nearest(a: torch.Tensor, b: torch.Tensor, cls: int) -> torch.Tensor:
    """(N,) each map of ``a`` holding class ``cls``: its highest Dice of that class alone with any map of ``b``."""
    dice = class_dice(a, b).get(cls)
    if dice is None:
        return torch.zeros(0)
    holds = (a == cls).flatten(1).any(1)
    return torch.nan_to_num(dice, nan=0.0).max(dim=1).values[holds]


def measure(
    data_root: str | Path,
    count: int,
    seed: int,
    ceilings: Sequence[float] = (),
    quantiles: Sequence[float] = (DEFAULT_QUANTILE,),
    spatial_size: Sequence[int] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Per center and pooled: each real training map's similarity to its nearest map of ANOTHER subject (entries of
    one ``subject`` are not each other's neighbours; without subjects every map is its own), in the mean over
    foreground classes and per class, next to its nearest map of any subject (what a same-subject neighbour gives);
    the ceiling :func:`~scripts.data.label_maps.calibrate_ceiling` derives at each of ``quantiles``; and new maps
    made under each such ceiling and each explicit constant of ``ceilings`` (seconds, draws per map, similarity to
    the nearest source overall and per class), or the refusal, one line, where the maps cannot be made. Also what the
    deformation alone gives (new maps made without a ceiling), and what the new maps hold next to the real ones
    (:func:`class_content` of the ``relocatable`` classes: a check that skews them shows here).

    Args:
        data_root: folder with ``centers.json``.
        count: new maps per center and ceiling.
        seed: seed of the new maps.
        ceilings: explicit constant ceilings to try besides the calibrated ones.
        quantiles: calibration quantiles to try (the first is the one reported per class).
        spatial_size: read the maps at this size (as a visit does); default: as stored (every map the same size).
        settings: keyword arguments of :func:`~scripts.data.label_maps.new_label_maps` (``relocatable``, ...).
    """
    out: dict[str, Any] = {"centers": {}}
    pooled: dict[str, list[torch.Tensor]] = {"real_to_nearest_other_subject": [], "real_to_nearest_any_map": []}
    for name in read_center_order(data_root):
        center_dir = Path(data_root) / name
        labels = training_label_maps(center_dir, spatial_size=spatial_size)
        subjects = center_subjects(center_dir)
        nearest, per_class = nearest_other_subject(labels, subjects)
        any_map = label_map_similarity(labels, labels).fill_diagonal_(-1.0).max(dim=1).values
        free = new_label_maps(labels, count, seed, ceiling=1.0, **settings)
        center: dict[str, Any] = {
            "training_maps": int(labels.shape[0]),
            "subjects": len(set(subjects)),
            "real_to_nearest_other_subject": summary(nearest),
            "real_to_nearest_other_subject_per_class": {str(c): summary(v) for c, v in per_class.items()},
            "real_to_nearest_any_map": summary(any_map),
            "new_to_nearest_source_no_ceiling": summary(free.nearest_similarity),
            "real_content": class_content(labels, settings.get("relocatable", [])),
            "ceilings": {},
        }
        by_content = settings.get("ceiling_by_content", True)
        tried = [(f"quantile {q}", calibrate_ceiling(labels, subjects, q, by_content=by_content)) for q in quantiles]
        tried += [(f"constant {c}", float(c)) for c in ceilings]
        for key, ceiling in tried:
            entry: dict[str, Any] = {}
            if not isinstance(ceiling, float):
                entry["ceiling"] = ceiling.record()
                above = nearest > ceiling.mean_for(labels).double()
                entry["real_maps_above_it"] = round(float(above.double().mean()), 3)
            t0 = time.perf_counter()
            try:
                made = new_label_maps(labels, count, seed, ceiling=ceiling, subjects=subjects, **settings)
            except LabelMapTooCloseError as e:
                entry["refused"] = str(e)
            else:
                entry["seconds"] = round(time.perf_counter() - t0, 2)
                entry["mean_draws"] = round(sum(p["draws"] for p in made.provenance) / max(1, count), 2)
                entry["new_to_nearest_source"] = summary(made.nearest_similarity)
                entry["new_to_nearest_source_per_class"] = {
                    str(c): summary(class_dice_to_nearest(made.maps, labels, c)) for c in per_class
                }
                entry["new_content"] = class_content(made.maps, settings.get("relocatable", []))
            center["ceilings"][key] = entry
        pooled["real_to_nearest_other_subject"].append(nearest)
        pooled["real_to_nearest_any_map"].append(any_map)
        out["centers"][name] = center
    out["pooled"] = {k: summary(torch.cat(v)) for k, v in pooled.items()}
    return out


def training_label_maps(
    center_dir: str | Path, spatial_dims: int = 2, spatial_size: Sequence[int] | None = None
) -> torch.Tensor:
    """A center's training label maps, uint8 (N, 1, *spatial), at ``spatial_size`` (default: as stored); no image is
    read."""
    return read_label_maps(center_dir, spatial_dims, spatial_size)[0]


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: measure on ``--data_root`` or on demo centers made in a temporary folder; print JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data_root", default=None, help="folder with centers.json (default: fresh demo centers)")
    parser.add_argument("--count", type=int, default=48, help="new maps per center")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quantiles", type=float, nargs="+", default=[DEFAULT_QUANTILE], help="calibration quantiles")
    parser.add_argument("--ceilings", type=float, nargs="*", default=[], help="explicit constant ceilings to try")
    parser.add_argument("--spatial_size", type=int, nargs="*", default=None, help="read maps at this size")
    parser.add_argument("--relocatable", type=int, nargs="*", default=[3], help="lesion classes moved between maps")
    parser.add_argument("--hosts", type=int, nargs="*", default=[1], help="classes a moved lesion must lie inside")
    parser.add_argument("--flip_axes", type=int, nargs="*", default=[1], help="axes where a mirror image is plausible")
    parser.add_argument("--lesion_placements", type=int, default=4, help="placements tried before a redraw")
    parser.add_argument("--lesion_stretch", type=float, default=0.2, help="per-axis lesion resize range (+-)")
    parser.add_argument(
        "--lesion_prior_sigma", type=lambda v: None if v == "none" else float(v), default=0.1, help="or 'none'"
    )
    parser.add_argument("--one_ceiling", action="store_true", help="one mean ceiling, not one per set of classes")
    args = parser.parse_args(argv)
    settings = {
        "relocatable": args.relocatable,
        "hosts": args.hosts,
        "flip_axes": args.flip_axes,
        "lesion_placements": args.lesion_placements,
        "lesion_stretch": args.lesion_stretch,
        "lesion_prior_sigma": args.lesion_prior_sigma,
        "ceiling_by_content": not args.one_ceiling,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data_root or make_demo_centers(tmp, num_centers=3, num_train=48, num_test=16, size=64, seed=0)
        got = measure(root, args.count, args.seed, args.ceilings, args.quantiles, args.spatial_size, **settings)
        print(json.dumps(got, indent=2))


if __name__ == "__main__":
    main()
