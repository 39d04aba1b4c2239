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
"""How close real label maps are to each other and new label maps to their sources: the numbers behind the ceiling."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from scripts.data.centers import read_center_order, read_label_maps
from scripts.data.demo import make_demo_centers
from scripts.data.label_maps import label_map_similarity, new_label_maps

__all__ = ["summary", "training_label_maps", "class_dice_to_nearest", "measure", "main"]


def summary(values: torch.Tensor) -> dict[str, float]:
    """Median, 5th/25th/75th/95th percentiles, min and max, rounded to 3 decimals."""
    v = values.double()
    q = torch.quantile(v, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64)).tolist()
    names = ("q05", "q25", "median", "q75", "q95")
    return {
        "min": round(float(v.min()), 3),
        **{n: round(x, 3) for n, x in zip(names, q)},
        "max": round(float(v.max()), 3),
    }


def class_dice_to_nearest(a: torch.Tensor, b: torch.Tensor, cls: int, exclude_self: bool = False) -> torch.Tensor:
    """(N,) each map of ``a``'s highest Dice of the one class ``cls`` with any map of ``b`` (the diagonal left out when
    ``exclude_self``, for ``a`` = ``b``); maps without the class are left out."""
    s = label_map_similarity((a == cls).to(torch.uint8), (b == cls).to(torch.uint8))
    if exclude_self:
        s.fill_diagonal_(-1.0)
    has = (a == cls).flatten(1).any(1)
    return s.max(dim=1).values[has]


def measure(data_root: str | Path, count: int, seed: int, ceilings: Sequence[float], **settings: Any) -> dict[str, Any]:
    """Per center and pooled: each real training map's similarity to its nearest OTHER real training map of the
    center; each new map's similarity to its nearest source, made without a ceiling (what the deformation alone
    gives) and with each of ``ceilings`` (the seconds it took, the draws per map, the share of real maps more similar
    to another real map than the ceiling, and the share of the maps made without a ceiling that it would have
    redrawn); and, per foreground class, each map's best Dice of that class alone, real to real and new (first
    ceiling) to source, since a mean over classes could hide one copied class."""
    out: dict[str, Any] = {"centers": {}}
    pooled: dict[str, list[torch.Tensor]] = {"real_to_nearest_real": [], "new_to_nearest_source_no_ceiling": []}
    for name in read_center_order(data_root):
        labels = training_label_maps(Path(data_root) / name)
        s = label_map_similarity(labels, labels)
        s.fill_diagonal_(-1.0)
        real = s.max(dim=1).values
        free = new_label_maps(labels, count, seed, ceiling=1.0, **settings).nearest_similarity
        center: dict[str, Any] = {
            "training_maps": int(labels.shape[0]),
            "real_to_nearest_real": summary(real),
            "new_to_nearest_source_no_ceiling": summary(free),
            "with_ceiling": {},
        }
        for ceiling in ceilings:
            t0 = time.perf_counter()
            made = new_label_maps(labels, count, seed, ceiling=ceiling, **settings)
            center["with_ceiling"][str(ceiling)] = {
                "seconds": round(time.perf_counter() - t0, 2),
                "mean_draws": round(sum(p["draws"] for p in made.provenance) / count, 2),
                "new_to_nearest_source": summary(made.nearest_similarity),
                "real_maps_above_ceiling": round(float((real > ceiling).double().mean()), 3),
                "new_maps_above_ceiling_without_it": round(float((free > ceiling).double().mean()), 3),
            }
        made = new_label_maps(labels, count, seed, ceiling=ceilings[0], **settings).maps
        classes = [int(c) for c in labels.unique() if int(c) != 0]
        center["per_class_best_dice"] = {
            str(c): {
                "real_to_real": summary(class_dice_to_nearest(labels, labels, c, exclude_self=True)),
                "new_to_source": summary(class_dice_to_nearest(made, labels, c)),
            }
            for c in classes
        }
        pooled["real_to_nearest_real"].append(real)
        pooled["new_to_nearest_source_no_ceiling"].append(free)
        out["centers"][name] = center
    out["pooled"] = {k: summary(torch.cat(v)) for k, v in pooled.items()}
    return out


def training_label_maps(center_dir: str | Path, spatial_dims: int = 2) -> torch.Tensor:
    """A center's training label maps at their stored size, uint8 (N, 1, *spatial); no image is read."""
    return read_label_maps(center_dir, spatial_dims)[0]


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: measure on ``--data_root`` or on demo centers made in a temporary folder; print JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data_root", default=None, help="folder with centers.json (default: fresh demo centers)")
    parser.add_argument("--count", type=int, default=48, help="new maps per center")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ceilings", type=float, nargs="+", default=[0.5])
    parser.add_argument("--relocatable", type=int, nargs="*", default=[3], help="lesion classes moved between maps")
    parser.add_argument("--hosts", type=int, nargs="*", default=[1], help="classes a moved lesion must lie inside")
    parser.add_argument("--flip_axes", type=int, nargs="*", default=[1], help="axes where a mirror image is plausible")
    args = parser.parse_args(argv)
    settings = {"relocatable": args.relocatable, "hosts": args.hosts, "flip_axes": args.flip_axes}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data_root or make_demo_centers(tmp, num_centers=3, num_train=48, num_test=16, size=64, seed=0)
        print(json.dumps(measure(root, args.count, args.seed, args.ceilings, **settings), indent=2))


if __name__ == "__main__":
    main()
