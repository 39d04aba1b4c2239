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
"""How a synthetic set's lesions compare with the real ones, per center: lesion area in the label maps and lesion
contrast in the images (what a UNet trained on the set learns to find)::

    python -m tools.lesion_stats --data_root data/demo --synthetic output/seed0/tdgan_bank/synthetic

Per center and set (the center's real training pairs, or its test pairs with ``--real_key test``; the synthetic
pairs made in its style): the share of maps with a lesion, the lesion area in pixels (median, mean), and the contrast
of the lesion against the host tissue around it: (mean image value in the lesion - mean in a ``ring``-pixel band of
host class around it) / the band's standard deviation, the mean over images with a lesion. With ``--segmentation`` (a
UNet's ``segmentation.pt`` trained by the evaluation with the demo's settings, e.g.
``output/segmentation/seed0/real_all/segmentation.pt``): how that UNet reads each set's lesions, pixels it calls
lesion against the labelled ones, precision and recall (a real-trained UNet that calls more pixels lesion on a
synthetic set than its labels hold sees the set's lesions drawn larger than their maps). One JSON line per center,
then a Markdown table. A development tool of the repository, not part of the bundle's package; its results:
docs/privacy.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import load_decathlon_datalist
from monai.transforms import LoadImage
from scipy import ndimage

__all__ = ["lesion_stats", "unet_reading", "main"]

REPO = Path(__file__).resolve().parents[1]


def lesion_stats(
    items: Sequence[dict[str, Any]], lesion: int = 3, host: int = 1, ring: int = 4, min_pixels: int = 3
) -> dict[str, Any]:
    """Lesion share, area and contrast of image/label file pairs (``items`` of a MONAI datalist, absolute paths).

    Args:
        items: dicts with ``image`` and ``label`` file paths.
        lesion: the lesion class.
        host: the class around a lesion its contrast is measured against.
        ring: width in pixels of the host band around the lesion.
        min_pixels: lesion and band pixels an image needs for its contrast to count.
    """
    load = LoadImage(image_only=True)
    areas, contrasts = [], []
    for item in items:
        image = np.asarray(load(item["image"]), dtype=np.float64).squeeze()
        label = np.asarray(load(item["label"])).squeeze().round().astype(int)
        mask = label == lesion
        areas.append(int(mask.sum()))
        band = ndimage.binary_dilation(mask, iterations=ring) & ~mask & (label == host)
        if mask.sum() >= min_pixels and band.sum() >= min_pixels:
            around = image[band]
            contrasts.append(float((image[mask].mean() - around.mean()) / (around.std() + 1e-6)))
    present = [a for a in areas if a > 0]
    return {
        "maps": len(areas),
        "with_lesion": round(len(present) / max(len(areas), 1), 3),
        "area_median": float(np.median(present)) if present else 0.0,
        "area_mean": round(float(np.mean(present)), 1) if present else 0.0,
        "contrast_mean": round(float(np.mean(contrasts)), 3) if contrasts else None,
        "contrast_images": len(contrasts),
    }


def _demo_unet(path: str | Path, num_classes: int) -> torch.nn.Module:
    """The evaluation's UNet (configs/segmentation.json's network with configs/demo.json's segmentation overrides),
    loaded from ``path`` for inference on the CPU."""
    from monai.bundle import ConfigParser

    demo = ConfigParser.load_config_file(str(REPO / "configs" / "demo.json"))["segmentation_overrides"]
    parser = ConfigParser(ConfigParser.load_config_file(str(REPO / "configs" / "segmentation.json")))
    parser.update({k: v for k, v in demo.items() if k.startswith("segmentation_def#")})
    parser.update({"spatial_dims": 2, "image_channels": 1, "num_classes": num_classes, "setup": None})
    network = parser.get_parsed_content("segmentation_def")
    state = torch.load(path, map_location="cpu", weights_only=True)
    network.load_state_dict(state.get("network", state))
    return network.eval()


def unet_reading(items: Sequence[dict[str, Any]], network: torch.nn.Module, lesion: int = 3) -> dict[str, Any]:
    """How ``network`` reads the lesions of image/label pairs (each image min-max scaled to [0, 1], as the evaluation
    feeds it): lesion pixels predicted and labelled over all pairs, precision and recall."""
    load = LoadImage(image_only=True)
    predicted = labelled = overlap = 0
    with torch.no_grad():
        for item in items:
            image = torch.as_tensor(np.asarray(load(item["image"]), dtype=np.float32).squeeze())
            label = np.asarray(load(item["label"])).squeeze().round().astype(int) == lesion
            image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-8)
            call = network(image[None, None]).argmax(1)[0].numpy() == lesion
            predicted += call.sum()
            labelled += label.sum()
            overlap += (call & label).sum()
    return {
        "predicted_pixels": int(predicted),
        "labelled_pixels": int(labelled),
        "precision": round(float(overlap / predicted), 3) if predicted else None,
        "recall": round(float(overlap / labelled), 3) if labelled else None,
    }


def _synthetic_items(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """The synthetic set's pairs per center whose style made them (its dataset.json's ``center`` of each item)."""
    meta = json.loads((folder / "dataset.json").read_text())
    out: dict[str, list[dict[str, Any]]] = {}
    for item in meta["training"]:
        out.setdefault(item["center"], []).append(
            {"image": str(folder / item["image"]), "label": str(folder / item["label"])}
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data_root", required=True, help="folder of the center folders (each with dataset.json)")
    p.add_argument("--synthetic", required=True, help="a synthetic set's folder (its dataset.json names each center)")
    p.add_argument("--lesion", type=int, default=3, help="lesion class (default 3, the demo's)")
    p.add_argument("--host", type=int, default=1, help="class around the lesion (default 1, the demo's brain)")
    p.add_argument("--ring", type=int, default=4, help="width of the host band, pixels")
    p.add_argument("--segmentation", help="a UNet's segmentation.pt (demo settings): how it reads each set's lesions")
    p.add_argument("--num_classes", type=int, default=4, help="classes of that UNet (default 4, the demo's)")
    p.add_argument("--real_key", default="training", help="the centers' pairs to compare: training (default) or test")
    args = p.parse_args(argv)
    if args.segmentation and not Path(args.segmentation).is_file():
        p.error(f"{args.segmentation}: no such file; give a UNet's segmentation.pt.")
    network = _demo_unet(args.segmentation, args.num_classes) if args.segmentation else None
    synthetic = Path(args.synthetic)
    if not (synthetic / "dataset.json").is_file():
        p.error(
            f"{synthetic}: no dataset.json; give a synthetic set's folder (e.g. output/seed0/tdgan_bank/synthetic)."
        )
    rows = []
    for center, items in sorted(_synthetic_items(synthetic).items()):
        folder = Path(args.data_root) / center
        if not (folder / "dataset.json").is_file():
            p.error(f"{folder}: no dataset.json; --data_root must hold the center {center!r} the set names.")
        real = load_decathlon_datalist(str(folder / "dataset.json"), True, args.real_key, base_dir=str(folder))
        row = {"center": center}
        for name, pairs in (("real", real), ("synthetic", items)):
            row[name] = lesion_stats(pairs, args.lesion, args.host, args.ring)
            if network is not None:
                row[name]["unet"] = unet_reading(pairs, network, args.lesion)
        print(json.dumps(row), flush=True)
        rows.append(row)
    unet = " UNet's lesion pixels / labelled | precision / recall |" if network is not None else ""
    print("\n| center | set | maps | with a lesion | area median / mean (px) | lesion contrast |" + unet)
    print("| --- | --- | --- | --- | --- | --- |" + (" --- | --- |" if unet else ""))
    for row in rows:
        for name in ("real", "synthetic"):
            s = row[name]
            contrast = "n/a" if s["contrast_mean"] is None else f"{s['contrast_mean']:.2f}"
            read = s.get("unet")
            read_cells = (
                f" {read['predicted_pixels']} / {read['labelled_pixels']} | {read['precision']} / {read['recall']} |"
                if read
                else ""
            )
            print(
                f"| {row['center']} | {name} | {s['maps']} | {s['with_lesion']:.2f} | "
                f"{s['area_median']:.0f} / {s['area_mean']:.0f} | {contrast} |" + read_cells
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
