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
"""Export a hand-off's generator as the bundle's released weights (``models/model.pt``, a plain state dict)."""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from scripts.files import atomic_write
from scripts.handoff import load_handoff

__all__ = ["export_generator"]

SETTINGS = ("spatial_dims", "num_classes", "max_centers", "ngf", "num_blocks", "num_downsampling")


def export_generator(handoff: str | os.PathLike, output: str | os.PathLike, inference_config: str) -> str:
    """Write the generator weights of ``handoff`` to ``output`` (atomically) and check that ``inference_config``'s
    defaults build that generator with the same center codes, so that ``models/model.pt`` works out of the box.

    Returns:
        the sha256 of the written file.

    Raises:
        ValueError: the inference config's defaults do not match the hand-off (which keys to change is said).
    """
    h = load_handoff(handoff)
    parser = ConfigParser()
    parser.read_config(inference_config)
    parser["handoff"] = None
    wanted = {k: h.network[k] for k in SETTINGS}
    wanted["image_channels"] = h.network["out_channels"]
    diffs = [
        f"{k}: {parser.get_parsed_content(k)!r} -> {v!r}"
        for k, v in wanted.items()
        if parser.get_parsed_content(k) != v
    ]
    centers = list(h.codes)
    if parser.get_parsed_content("ckpt_centers") != centers or list(h.codes.values()) != list(range(len(centers))):
        diffs.append(f"ckpt_centers: {parser.get_parsed_content('ckpt_centers')!r} -> {centers!r}")
    if diffs:
        raise ValueError(f"{inference_config} does not build this generator; change: " + "; ".join(diffs) + ".")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, lambda f: torch.save({k: v.contiguous() for k, v in h.generator.items()}, f), mode=0o644)
    return hashlib.sha256(output.read_bytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--handoff", required=True, help="hand-off whose generator is released")
    ap.add_argument("--output", default="models/model.pt")
    ap.add_argument("--inference_config", default="configs/inference.json")
    args = ap.parse_args()
    digest = export_generator(args.handoff, args.output, args.inference_config)
    size = Path(args.output).stat().st_size / 2**20
    print(f"wrote {args.output} ({size:.1f} MiB, sha256 {digest}) from {args.handoff}")


if __name__ == "__main__":
    main()
